"""Driving the portals in tests as a browser does: sign in through the real form, keep the
cookies, post forms with the CSRF token of the page they are on.

    async with signed_in(running, "admin", PASSWORD, organisation="acme") as portal:
        html = await portal.page("/admin/o/acme")                 # 200, remembers its token
        answer = await portal.submit("/admin/o/acme/...", {"name": "x"})  # a form of the page
        assert answer.status_code == 302
        html = await portal.follow(answer)                        # the page it leads to
        assert "saved" in flash_of(html)

Each :func:`signed_in` has its own client, so several accounts can act side by side.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from .conftest import RunningService

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
_FLASH = re.compile(r'<p class="flash (\w+)"[^>]*>(.*?)</p>', re.DOTALL)

#: Form data: a mapping (a list value sends the name once per item) or (name, value) pairs.
FormData = Mapping[str, Any] | list[tuple[str, str]]


def csrf(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def flash_of(html: str) -> str | None:
    """The one-time message a page shows (confirmation or error), unescaped."""
    found = _FLASH.search(html)
    return html_lib.unescape(found.group(2)).strip() if found else None


def flash_kind(html: str) -> str | None:
    """``ok``, ``error``… of the page's message, if it has one."""
    found = _FLASH.search(html)
    return found.group(1) if found else None


class Portal:
    """One browser: a cookie jar, and the last page read (address, HTML, CSRF token): forms
    are posted from it, with its token, and it is their Referer (where errors are shown)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.token = ""
        self.url = ""
        self.html = ""

    async def sign_in(self, login: str, password: str, organisation: str = "") -> httpx.Response:
        """The sign-in form, as a person fills it in; answers the form's redirect."""
        form = await self.client.get("/sign-in")
        assert form.status_code == 200, form.text
        answer = await self.client.post(
            "/sign-in",
            data={
                "organisation": organisation,
                "login": login,
                "password": password,
                "csrf_token": csrf(form.text),
            },
        )
        assert answer.status_code == 302, answer.text
        return answer

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params or None)

    async def page(self, path: str, **params: str) -> str:
        """A page that must answer 200; its CSRF token is kept for the next form."""
        answer = await self.get(path, **params)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:500]}"
        return self._read(answer)

    def _read(self, answer: httpx.Response) -> str:
        self.url = str(answer.url)
        self.html = answer.text
        tokens = set(_CSRF.findall(answer.text))
        # Every form of a page carries the session's token: an empty or odd one is a bug.
        assert len(tokens) <= 1 and "" not in tokens, f"{self.url}: CSRF tokens {tokens}"
        if tokens:
            self.token = tokens.pop()
        return answer.text

    async def post_form(
        self,
        path: str,
        data: FormData | None = None,
        *,
        page: str | None = None,
        csrf_token: str | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Post a form with the CSRF token of ``page`` (read first when given), else of the
        last page read; ``csrf_token`` sends that token instead ("" sends none at all)."""
        if page is not None:
            await self.page(page)
        token = self.token if csrf_token is None else csrf_token
        pairs = list(data.items()) if isinstance(data, Mapping) else list(data or ())
        if token:
            pairs.append(("csrf_token", token))
        fields: dict[str, Any] = {}
        for name, value in pairs:
            values = value if isinstance(value, list | tuple) else [value]
            fields.setdefault(name, []).extend(values)
        headers = {"Referer": self.url} if self.url else {}
        return await self.client.post(path, data=fields, files=files, headers=headers)

    async def submit(
        self,
        path: str,
        data: FormData | None = None,
        *,
        page: str | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Like :meth:`post_form`, but the page must have a form posting to ``path``."""
        if page is not None:
            await self.page(page)
        assert self.html and f'action="{html_lib.escape(path)}"' in self.html, (
            f"{self.url} has no form posting to {path}"
        )
        return await self.post_form(path, data, files=files)

    async def follow(self, answer: httpx.Response) -> str:
        """The page a redirect leads to, through further redirects (its message shown once)."""
        for _ in range(5):
            assert answer.status_code in (302, 303), f"{answer.status_code}: {answer.text[:500]}"
            location = answer.headers["location"]
            answer = await self.get(location)
            if answer.status_code == 200:
                return self._read(answer)
        raise AssertionError("too many redirects")


@asynccontextmanager
async def signed_in(
    running: RunningService, login: str, password: str, *, organisation: str = ""
) -> AsyncIterator[Portal]:
    """A browser signed in to the portals as ``login`` (of ``organisation``, if any)."""
    async with httpx.AsyncClient(
        base_url=running.http_url, follow_redirects=False, timeout=30
    ) as client:
        portal = Portal(client)
        answer = await portal.sign_in(login, password, organisation)
        assert "emm_session" in client.cookies, f"{login} could not sign in: {answer.headers}"
        yield portal
