"""Password hashing with scrypt, a memory-hard KDF, and generation of one-time passwords.

scrypt with N=2**14, r=8 costs 16 MiB and some tens of milliseconds per guess, which is what
makes a stolen database expensive to attack; callers run it in a worker thread so that it
never blocks the event loop. The parameters are stored with each hash, so they can be raised
later without invalidating existing passwords.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1
_ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no look-alikes


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check; False for a missing or malformed hash, never an exception.

    Without a stored hash (no such account) the same scrypt work is done against a dummy,
    so the answer's timing does not tell which accounts exist.
    """
    if not stored:
        _check(password, _dummy_hash())
        return False
    return _check(password, stored)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _check(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def one_time_password(length: int = 16) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
