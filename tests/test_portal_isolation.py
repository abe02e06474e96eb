"""Portal routes: every action has its REST twin, and no organisation reaches another's pages.

Both tests enumerate the portal's routes from the application itself, so a new page or
action is covered as soon as it exists.
"""

from __future__ import annotations

import re
import sqlite3

import httpx

from web.api.operations import OPERATIONS, PREFIX
from web.app import create_app
from web.portal.pages import ACTIONS

from .conftest import RunningService, supervisor_token
from .test_isolation import table_counts
from .world import MANAGER_PASSWORD, World

RULE_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")


def portal_rules() -> list[tuple[str, str]]:
    """(method, rule) of every portal route that names an organisation."""
    app = create_app(None)  # type: ignore[arg-type]  # routes only
    return sorted(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("portal.") and "<organisation>" in rule.rule
        for method in rule.methods or ()
        if method in ("GET", "POST")
    )


def test_every_portal_action_has_its_rest_operation() -> None:
    documented = {(op.method, op.path) for op in OPERATIONS}
    assert ACTIONS, "no portal actions declared"
    missing = [action for action in ACTIONS if action.api not in documented]
    assert not missing, f"portal actions without a REST twin: {missing}"


async def sign_in(client: httpx.AsyncClient, organisation: str, password: str) -> str:
    """Sign in through the form; returns the session's CSRF token (from a portal page)."""
    page = await client.get("/sign-in")
    nonce = client.cookies["emm_login_csrf"]
    assert page.status_code == 200
    done = await client.post(
        "/sign-in",
        data={
            "organisation": organisation,
            "login": "admin",
            "password": password,
            "csrf_token": nonce,
        },
    )
    assert done.status_code == 302 and "emm_session" in client.cookies, done.text
    home = await client.get(f"/admin/o/{organisation}", follow_redirects=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
    assert token, home.text[:500]
    return token.group(1)


async def test_a_manager_gets_403_or_404_for_every_page_and_action_of_another_organisation(
    running: RunningService,
) -> None:
    async with running.client() as api:
        doc = (await api.get(f"{PREFIX}/openapi.json")).json()
        world = World(api, await supervisor_token(api, running.supervisor_password), doc)
        a = await world.organisation("org-a")
        b = await world.organisation("org-b")
        for path in doc["paths"]:
            await world.fill(b, path)
        async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as browser:
            csrf = await sign_in(browser, a.code, MANAGER_PASSWORD)
            before = table_counts(running)
            checked = 0
            for method, rule in portal_rules():
                url = rule
                for param in RULE_PARAM.findall(rule):
                    url = re.sub(rf"<(?:\w+:)?{param}>", await world.thing(b, param), url)
                if method == "GET":
                    response = await browser.get(url)
                else:
                    response = await browser.post(url, data={"csrf_token": csrf})
                assert response.status_code in (403, 404), (method, rule, response.status_code)
                checked += 1
    assert checked >= 10
    assert table_counts(running) == before, "a refused portal request changed something"
    with sqlite3.connect(running.bootstrap.database.path) as conn:
        assert conn.execute("SELECT count(*) FROM organisations").fetchone()[0] == 2


async def test_every_portal_form_without_a_valid_csrf_token_is_refused(
    running: RunningService,
) -> None:
    async with running.client() as api:
        doc = (await api.get(f"{PREFIX}/openapi.json")).json()
        world = World(api, await supervisor_token(api, running.supervisor_password), doc)
        a = await world.organisation("org-a")
        for path in doc["paths"]:
            await world.fill(a, path)
        async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as browser:
            await sign_in(browser, a.code, MANAGER_PASSWORD)
            before = table_counts(running)
            checked = 0
            # Every form action (sign-in has its own check; sign-out is harmless either way).
            for rule in sorted({a.path for a in ACTIONS if a.path.startswith(("/admin", "/my"))}):
                url = rule
                for param in RULE_PARAM.findall(rule):
                    url = re.sub(rf"<(?:\w+:)?{param}>", await world.thing(a, param), url)
                for token in (None, "forged"):
                    data = {} if token is None else {"csrf_token": token}
                    response = await browser.post(url, data=data)
                    assert response.status_code == 403, (rule, token, response.status_code)
                checked += 1
    assert checked >= 10
    assert table_counts(running) == before, "a refused form changed something"
