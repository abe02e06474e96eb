"""Errors of the domain layer; the web layer maps each to one HTTP status.

Domain operations raise these rather than returning error values, so that a route is a
straight line from request to domain call to response, and every failure is handled in one
place (``web/problems.py``) the same way for the portals and the REST API.
"""

from __future__ import annotations

from collections.abc import Iterable


class DomainError(Exception):
    """Something the caller asked for cannot be done; the message is safe to show."""


class Unauthenticated(DomainError):
    """No valid credentials (wrong password, unknown, revoked or expired token)."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class NotFound(DomainError):
    """No such thing, or not one the caller may see (the two are not told apart)."""


class AlreadyExists(DomainError):
    """A thing with this identity exists already."""


class Invalid(DomainError):
    """The request's values are wrong; ``field`` names the first offending one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Throttled(DomainError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Stale(DomainError):
    """The thing changed since the caller read it (a stale revision); read it again."""


def refuse_unknown(changes: Iterable[str], editable: Iterable[str]) -> None:
    """Refuse a change naming members that cannot be changed (the first, by name)."""
    unknown = sorted(set(changes) - set(editable))
    if unknown:
        raise Invalid(f"{unknown[0]} cannot be changed", field=unknown[0])
