"""Accounts, account templates, name policy and vendor admins over the REST API.

Against the real service: every refusal is checked to change nothing, every change to leave
its audit event, and every answer to match the schema its route declares.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

import httpx

from web.api.accounts import (
    ACCOUNT,
    ACCOUNT_WITH_PASSWORD,
    NAME_POLICY,
    TEMPLATE,
    VENDOR,
    VENDOR_WITH_PASSWORD,
)
from web.api.schema import Schema, validate

from .conftest import RunningService, bearer, supervisor_token

API = "/api/v1"
MANAGER_PASSWORD = "manager password 1"
USER_PASSWORD = "user password 12"


@dataclass
class Org:
    """An organisation made through the API, with its first manager signed in."""

    client: httpx.AsyncClient
    code: str
    id: str
    supervisor: dict[str, str]
    manager: dict[str, str]

    @property
    def accounts(self) -> str:
        return f"{API}/organisations/{self.code}/accounts"

    @property
    def templates(self) -> str:
        return f"{API}/organisations/{self.code}/account-templates"

    @property
    def policy(self) -> str:
        return f"{API}/organisations/{self.code}/name-policy"

    async def create(self, auth: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        response = await self.client.post(self.accounts, json=body, headers=auth or self.manager)
        assert response.status_code == 201, response.text
        return matches(response, ACCOUNT_WITH_PASSWORD)

    async def sign_in(self, login: str, password: str) -> httpx.Response:
        return await self.client.post(
            f"{API}/auth/token",
            json={"organisation": self.code, "login": login, "password": password},
        )

    async def token(self, login: str, password: str) -> dict[str, str]:
        response = await self.sign_in(login, password)
        assert response.status_code == 201, response.text
        return bearer(response.json()["token"])


async def organisation(
    client: httpx.AsyncClient, supervisor: dict[str, str], code: str = "acme"
) -> Org:
    created = await client.post(
        f"{API}/organisations",
        json={"code": code, "short_name": code, "first_manager_password": MANAGER_PASSWORD},
        headers=supervisor,
    )
    assert created.status_code == 201, created.text
    org = Org(client, code, created.json()["id"], supervisor, {})
    org.manager = await org.token("admin", MANAGER_PASSWORD)
    return org


async def acme(running: RunningService, client: httpx.AsyncClient) -> Org:
    return await organisation(
        client, bearer(await supervisor_token(client, running.supervisor_password))
    )


def matches(response: httpx.Response, schema: Schema) -> Any:
    """The answer's JSON, after checking it against the route's declared schema."""
    body = response.json()
    validate(body, schema)
    return body


def page_of(response: httpx.Response, schema: Schema) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "total", "limit", "offset"}
    for item in body["items"]:
        validate(item, schema)
    return body


def logins(response: httpx.Response) -> list[str]:
    return [item["login"] for item in page_of(response, ACCOUNT)["items"]]


def events(running: RunningService, action: str | None = None) -> list[dict[str, Any]]:
    with sqlite3.connect(running.bootstrap.database.path) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(row) for row in conn.execute("SELECT * FROM audit_events ORDER BY at, id")]
    for row in rows:
        row["details"] = json.loads(row["details"])
    return [row for row in rows if action is None or row["action"] == action]


def database(running: RunningService, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(running.bootstrap.database.path, timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def refused(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    if field is not None:
        assert problem.get("field") == field, problem
    return problem


# --------------------------------------------------------------------------- accounts


async def test_accounts_are_created_listed_changed_and_removed(running: RunningService) -> None:
    async with running.client() as client:
        org = await acme(running, client)
        alice = await org.create(
            login="alice", display_name="Alice Able", email="alice@example.com", locale="en-GB"
        )
        # No password given: a one-time one is answered this once, and must be changed.
        assert alice["kind"] == "user" and alice["rights"] == []
        assert alice["must_change_password"] is True and len(alice["one_time_password"]) >= 12
        bob = await org.create(login="bob", display_name="Bob", password=USER_PASSWORD)
        assert bob["one_time_password"] is None and bob["must_change_password"] is False
        room = await org.create(login="room-1", kind="resource", display_name="Meeting room")
        assert room["one_time_password"] is None
        lead = await org.create(login="lead", kind="manager", rights=["commands", "devices"])
        assert lead["rights"] == ["commands", "devices"]

        # Made from the organisation's default templates, made on first use.
        templates = page_of(await client.get(org.templates, headers=org.manager), TEMPLATE)
        by_name = {t["name"]: t for t in templates["items"]}
        assert {"Default user", "Default resource", "Default manager"} <= set(by_name)
        assert alice["template"] == bob["template"] == by_name["Default user"]["id"]
        assert by_name["Default manager"]["rights"] == []  # defaults grant nothing

        fetched = await client.get(f"{org.accounts}/{alice['id']}", headers=org.manager)
        assert fetched.status_code == 200
        shown = matches(fetched, ACCOUNT)
        assert "one_time_password" not in shown  # answered once, never again
        assert shown == {k: v for k, v in alice.items() if k != "one_time_password"}

        # Lists: default order by login, sort, filter, paging.
        everyone = await client.get(org.accounts, headers=org.manager)
        assert logins(everyone) == ["admin", "alice", "bob", "lead", "room-1"]
        assert everyone.json()["total"] == 5
        descending = await client.get(org.accounts, params={"sort": "-login"}, headers=org.manager)
        assert logins(descending) == ["room-1", "lead", "bob", "alice", "admin"]
        by_name_sort = await client.get(
            org.accounts, params={"sort": "display_name"}, headers=org.manager
        )
        assert logins(by_name_sort)[-3:] == ["alice", "bob", "room-1"]
        users = await client.get(org.accounts, params={"filter[kind]": "user"}, headers=org.manager)
        assert logins(users) == ["alice", "bob"]
        mail = await client.get(
            org.accounts, params={"filter[email]": "EXAMPLE.com"}, headers=org.manager
        )
        assert logins(mail) == ["alice"]
        second_page = await client.get(
            org.accounts, params={"limit": 2, "offset": 2}, headers=org.manager
        )
        assert logins(second_page) == ["bob", "lead"]
        assert second_page.json() | {"items": []} == {
            "items": [],
            "total": 5,
            "limit": 2,
            "offset": 2,
        }
        refused(
            await client.get(org.accounts, params={"sort": "password_hash"}, headers=org.manager),
            422,
            "sort",
        )

        before = events(running)
        # Bad input changes nothing.
        duplicate = await client.post(org.accounts, json={"login": "alice"}, headers=org.manager)
        refused(duplicate, 409)
        refused(
            await client.post(
                org.accounts, json={"login": "carol", "email": "no-at-sign"}, headers=org.manager
            ),
            422,
            "email",
        )
        refused(
            await client.post(
                org.accounts, json={"login": "carol", "password": "short"}, headers=org.manager
            ),
            422,
            "password",
        )
        refused(
            await client.post(
                org.accounts,
                json={"login": "carol", "kind": "user", "rights": ["commands"]},
                headers=org.manager,
            ),
            422,
            "rights",
        )
        refused(
            await client.post(
                org.accounts, json={"login": "carol", "kind": "supervisor"}, headers=org.manager
            ),
            422,
            "kind",
        )
        refused(
            await client.patch(
                f"{org.accounts}/{bob['id']}", json={"rights": ["audit"]}, headers=org.manager
            ),
            422,
            "rights",
        )
        refused(
            await client.patch(
                f"{org.accounts}/{bob['id']}", json={"login": "robert"}, headers=org.manager
            ),
            422,
            "login",
        )
        assert events(running) == before
        assert logins(await client.get(org.accounts, headers=org.manager))[1:3] == ["alice", "bob"]

        changed = await client.patch(
            f"{org.accounts}/{bob['id']}",
            json={"display_name": "Robert", "email": "bob@example.com", "phone_number": "+1 555"},
            headers=org.manager,
        )
        assert changed.status_code == 200, changed.text
        assert matches(changed, ACCOUNT)["display_name"] == "Robert"
        cleared = await client.patch(
            f"{org.accounts}/{bob['id']}", json={"email": None}, headers=org.manager
        )
        assert cleared.json()["email"] is None and cleared.json()["phone_number"] == "+1 555"
        promoted = await client.patch(
            f"{org.accounts}/{lead['id']}", json={"rights": ["accounts"]}, headers=org.manager
        )
        assert promoted.json()["rights"] == ["accounts"]

        removed = await client.delete(f"{org.accounts}/{room['id']}", headers=org.manager)
        assert removed.status_code == 204
        gone = await client.get(f"{org.accounts}/{room['id']}", headers=org.manager)
        refused(gone, 404)
        refused(await client.delete(f"{org.accounts}/{room['id']}", headers=org.manager), 404)
        # Nobody removes or deactivates themselves (they would lock themselves out).
        me = (await client.get(f"{API}/auth/me", headers=org.manager)).json()["account_id"]
        refused(await client.delete(f"{org.accounts}/{me}", headers=org.manager), 403)
        refused(
            await client.patch(f"{org.accounts}/{me}", json={"active": False}, headers=org.manager),
            403,
        )

    created = events(running, "account.created")
    assert [e["details"]["login"] for e in created][-4:] == ["alice", "bob", "room-1", "lead"]
    assert all(e["organisation_id"] == org.id and e["actor"] == "admin" for e in created[-4:])
    assert len(events(running, "account_template.created")) == 3
    assert [e["target_id"] for e in events(running, "account.changed")] == [
        bob["id"],
        bob["id"],
        lead["id"],
    ]
    assert events(running, "account.changed")[-1]["details"] == {"rights": ["accounts"]}
    assert [e["target_id"] for e in events(running, "account.removed")] == [room["id"]]
    assert all(alice["one_time_password"] not in json.dumps(e) for e in events(running))


async def test_deactivated_accounts_lose_their_sessions_at_once(running: RunningService) -> None:
    async with running.client() as client:
        org = await acme(running, client)
        bob = await org.create(login="bob", password=USER_PASSWORD)
        token = await org.token("bob", USER_PASSWORD)
        assert (await client.get(f"{org.accounts}/{bob['id']}", headers=token)).status_code == 200
        off = await client.patch(
            f"{org.accounts}/{bob['id']}", json={"active": False}, headers=org.manager
        )
        assert off.status_code == 200 and off.json()["active"] is False
        refused(await client.get(f"{API}/auth/me", headers=token), 401)
        refused(await org.sign_in("bob", USER_PASSWORD), 401)
        inactive = await client.get(
            org.accounts, params={"filter[active]": "false"}, headers=org.manager
        )
        assert logins(inactive) == ["bob"]
        on = await client.patch(
            f"{org.accounts}/{bob['id']}", json={"active": True}, headers=org.manager
        )
        assert on.json()["active"] is True
        assert (await org.sign_in("bob", USER_PASSWORD)).status_code == 201
    revoked = database(
        running,
        "SELECT count(*) FROM api_tokens WHERE account_id = ? AND revoked_at IS NOT NULL",
        bob["id"],
    )
    assert revoked == [(1,)]
    assert [e["details"] for e in events(running, "account.changed")] == [
        {"active": False},
        {"active": True},
    ]


async def test_nobody_grants_more_rights_than_they_hold(running: RunningService) -> None:
    async with running.client() as client:
        org = await acme(running, client)
        await org.create(
            login="helpdesk", kind="manager", rights=["commands"], password=USER_PASSWORD
        )
        lead = await org.create(
            login="lead", kind="manager", rights=["accounts", "commands"], password=USER_PASSWORD
        )
        helpdesk = await org.token("helpdesk", USER_PASSWORD)
        lead_auth = await org.token("lead", USER_PASSWORD)
        admin_id = (await client.get(f"{API}/auth/me", headers=org.manager)).json()["account_id"]
        helpdesk_id = (await client.get(f"{API}/auth/me", headers=helpdesk)).json()["account_id"]
        before = events(running)

        # Helpdesk (commands only) sees accounts but creates none, not even a user.
        assert (await client.get(org.accounts, headers=helpdesk)).status_code == 200
        refused(await client.post(org.accounts, json={"login": "user1"}, headers=helpdesk), 403)
        refused(
            await client.post(
                org.accounts,
                json={"login": "mgr1", "kind": "manager", "rights": ["accounts"]},
                headers=helpdesk,
            ),
            403,
        )
        # Lead holds accounts and commands: no more may it give, to others or to itself.
        wipe = await client.post(
            org.accounts,
            json={"login": "mgr2", "kind": "manager", "rights": ["accounts", "wipe"]},
            headers=lead_auth,
        )
        assert "wipe" in refused(wipe, 403)["detail"]
        refused(
            await client.patch(
                f"{org.accounts}/{lead['id']}",
                json={"rights": ["accounts", "commands", "wipe"]},
                headers=lead_auth,
            ),
            403,
        )
        # Nor does it touch a manager who holds rights it lacks.
        for response in (
            await client.patch(
                f"{org.accounts}/{admin_id}", json={"display_name": "x"}, headers=lead_auth
            ),
            await client.patch(
                f"{org.accounts}/{admin_id}", json={"active": False}, headers=lead_auth
            ),
            await client.delete(f"{org.accounts}/{admin_id}", headers=lead_auth),
            await client.post(f"{org.accounts}/{admin_id}/password", headers=lead_auth),
        ):
            refused(response, 403)
        # Templates are configuration, which lead does not hold; nor can a template it may
        # not make be used to slip rights past the rule.
        refused(
            await client.post(org.templates, json={"name": "t", "kind": "user"}, headers=lead_auth),
            403,
        )
        assert events(running) == before

        full = await client.post(
            org.templates,
            json={"name": "Full", "kind": "manager", "rights": ["accounts", "wipe"]},
            headers=org.manager,
        )
        assert full.status_code == 201
        refused(
            await client.post(
                org.accounts,
                json={"login": "mgr3", "template": full.json()["id"]},
                headers=lead_auth,
            ),
            403,
        )
        # Within its own rights, lead may do all of it.
        made = await org.create(lead_auth, login="mgr4", kind="manager", rights=["commands"])
        assert made["rights"] == ["commands"]
        raised = await client.patch(
            f"{org.accounts}/{helpdesk_id}",
            json={"rights": ["accounts", "commands"]},
            headers=lead_auth,
        )
        assert raised.status_code == 200 and raised.json()["rights"] == ["accounts", "commands"]
        lowered = await client.patch(
            f"{org.accounts}/{lead['id']}", json={"rights": ["accounts"]}, headers=lead_auth
        )
        assert lowered.status_code == 200
        await org.create(lead_auth, login="someone")  # users need the accounts right only
    assert [e["details"]["login"] for e in events(running, "account.created")][-2:] == [
        "mgr4",
        "someone",
    ]
    assert [e["actor"] for e in events(running, "account.changed")] == ["lead", "lead"]


# --------------------------------------------------------------------------- templates


async def test_account_templates_preset_new_accounts(running: RunningService) -> None:
    async with running.client() as client:
        org = await acme(running, client)
        created = await client.post(
            org.templates,
            json={
                "name": "Helpdesk",
                "kind": "manager",
                "rights": ["commands"],
                "locale": "de-DE",
                "description": "first line",
            },
            headers=org.manager,
        )
        assert created.status_code == 201, created.text
        helpdesk = matches(created, TEMPLATE)
        assert created.headers["Location"].endswith(helpdesk["id"])
        users = await client.post(
            org.templates,
            json={"name": "Staff", "kind": "user", "locale": "fr"},
            headers=org.manager,
        )
        staff = matches(users, TEMPLATE)
        before = events(running)
        refused(
            await client.post(
                org.templates, json={"name": "Helpdesk", "kind": "user"}, headers=org.manager
            ),
            409,
        )
        refused(
            await client.post(
                org.templates,
                json={"name": "Odd", "kind": "user", "rights": ["wipe"]},
                headers=org.manager,
            ),
            422,
            "rights",
        )
        refused(
            await client.post(
                org.templates, json={"name": "  ", "kind": "user"}, headers=org.manager
            ),
            422,
            "name",
        )
        refused(
            await client.patch(
                f"{org.templates}/{staff['id']}", json={"kind": "manager"}, headers=org.manager
            ),
            422,
            "kind",
        )
        assert events(running) == before

        listed = page_of(
            await client.get(org.templates, params={"sort": "-name"}, headers=org.manager),
            TEMPLATE,
        )
        assert [t["name"] for t in listed["items"]] == ["Staff", "Helpdesk"]
        filtered = page_of(
            await client.get(
                org.templates, params={"filter[kind]": "manager"}, headers=org.manager
            ),
            TEMPLATE,
        )
        assert [t["name"] for t in filtered["items"]] == ["Helpdesk"]
        got = await client.get(f"{org.templates}/{helpdesk['id']}", headers=org.manager)
        assert matches(got, TEMPLATE) == helpdesk

        # The template presets kind, rights and locale; explicit values win.
        agent = await org.create(login="agent", template=helpdesk["id"])
        assert (agent["kind"], agent["rights"], agent["locale"]) == (
            "manager",
            ["commands"],
            "de-DE",
        )
        assert agent["template"] == helpdesk["id"]
        pierre = await org.create(login="pierre", template=staff["id"], locale="fr-CA")
        assert (pierre["kind"], pierre["locale"]) == ("user", "fr-CA")
        refused(
            await client.post(
                org.accounts,
                json={"login": "x1", "template": staff["id"], "kind": "manager"},
                headers=org.manager,
            ),
            422,
            "kind",
        )
        refused(
            await client.post(
                org.accounts, json={"login": "x2", "template": "nope"}, headers=org.manager
            ),
            422,
            "template",
        )

        # Changing a template does not change accounts made from it.
        patched = await client.patch(
            f"{org.templates}/{helpdesk['id']}",
            json={"rights": ["commands", "wipe"], "description": "second line"},
            headers=org.manager,
        )
        assert patched.status_code == 200
        assert matches(patched, TEMPLATE)["rights"] == ["commands", "wipe"]
        assert (await client.get(f"{org.accounts}/{agent['id']}", headers=org.manager)).json()[
            "rights"
        ] == ["commands"]
        # An account moves to another template of its kind only.
        refused(
            await client.patch(
                f"{org.accounts}/{pierre['id']}",
                json={"template": helpdesk["id"]},
                headers=org.manager,
            ),
            422,
            "template",
        )
        other_staff = await client.post(
            org.templates, json={"name": "Contractors", "kind": "user"}, headers=org.manager
        )
        moved = await client.patch(
            f"{org.accounts}/{pierre['id']}",
            json={"template": other_staff.json()["id"]},
            headers=org.manager,
        )
        assert moved.json()["template"] == other_staff.json()["id"]

        # In use: refused, and still there.
        in_use = await client.delete(f"{org.templates}/{helpdesk['id']}", headers=org.manager)
        assert "1 account" in refused(in_use, 422)["detail"]
        assert (
            await client.get(f"{org.templates}/{helpdesk['id']}", headers=org.manager)
        ).status_code == 200
        assert (
            await client.delete(f"{org.accounts}/{agent['id']}", headers=org.manager)
        ).status_code == 204
        assert (
            await client.delete(f"{org.templates}/{helpdesk['id']}", headers=org.manager)
        ).status_code == 204
        refused(await client.get(f"{org.templates}/{helpdesk['id']}", headers=org.manager), 404)

        # A manager without the configuration right reads templates but changes none.
        reader = await org.create(login="reader", kind="manager", password=USER_PASSWORD)
        assert reader["rights"] == []
        reader_auth = await org.token("reader", USER_PASSWORD)
        assert (await client.get(org.templates, headers=reader_auth)).status_code == 200
        refused(
            await client.patch(
                f"{org.templates}/{staff['id']}", json={"description": "x"}, headers=reader_auth
            ),
            403,
        )
        refused(await client.delete(f"{org.templates}/{staff['id']}", headers=reader_auth), 403)
    actions = [e["action"] for e in events(running) if e["action"].startswith("account_template")]
    assert actions.count("account_template.created") == 4  # 3 made + Default manager
    assert actions.count("account_template.changed") == 1
    assert actions.count("account_template.removed") == 1
    changed = events(running, "account_template.changed")[0]
    assert changed["target_id"] == helpdesk["id"] and changed["details"]["rights"] == [
        "commands",
        "wipe",
    ]


# --------------------------------------------------------------------------- name policy


async def test_login_ids_follow_the_name_policy(running: RunningService) -> None:
    async with running.client() as client:
        org = await acme(running, client)
        default = await client.get(org.policy, headers=org.manager)
        policy = matches(default, NAME_POLICY)
        assert policy["default"] is True and (policy["min_length"], policy["max_length"]) == (3, 64)
        refused(
            await client.post(org.accounts, json={"login": "jo"}, headers=org.manager), 422, "login"
        )
        spaced = await client.post(org.accounts, json={"login": "jo smith"}, headers=org.manager)
        assert policy["rule"] in refused(spaced, 422, "login")["detail"]

        before = events(running)
        for bad, field in (
            ({"min_length": 9, "max_length": 4, "allowed_characters": "a-z"}, "max_length"),
            ({"min_length": 3, "max_length": 9, "allowed_characters": "z-a"}, "allowed_characters"),
            ({"min_length": 3, "max_length": 9, "allowed_characters": "a z"}, "allowed_characters"),
            ({"min_length": 0, "max_length": 9, "allowed_characters": "a-z"}, "min_length"),
        ):
            refused(await client.put(org.policy, json=bad, headers=org.manager), 422, field)
        assert events(running) == before

        put = await client.put(
            org.policy,
            json={
                "min_length": 4,
                "max_length": 12,
                "allowed_characters": "a-z0-9._-",
                "forbidden_words": ["admin", "Root"],
            },
            headers=org.manager,
        )
        assert put.status_code == 200, put.text
        rule = matches(put, NAME_POLICY)["rule"]
        assert rule == (
            "Login ids have 4 to 12 characters: a-z, 0-9, '.', '_' or '-'; "
            "they must not contain 'admin' or 'Root'."
        )
        assert put.json()["default"] is False
        for login in ("Jane", "abc", "a-very-long-login", "sysadmin2", "xROOTx", "jane@home"):
            response = await client.post(org.accounts, json={"login": login}, headers=org.manager)
            assert rule in refused(response, 422, "login")["detail"], login
        assert (await org.create(login="jane_doe.2"))["login"] == "jane_doe.2"

        # Device owners are shown the rule, but do not set it.
        await org.create(login="owner", password=USER_PASSWORD)
        owner = await org.token("owner", USER_PASSWORD)
        shown = await client.get(org.policy, headers=owner)
        assert shown.status_code == 200 and shown.json()["rule"] == rule
        refused(
            await client.put(
                org.policy,
                json={"min_length": 1, "max_length": 9, "allowed_characters": "a-z"},
                headers=owner,
            ),
            403,
        )
    changes = events(running, "name_policy.changed")
    assert len(changes) == 1 and changes[0]["details"]["forbidden_words"] == ["admin", "Root"]
    stored = database(running, "SELECT name_policy FROM organisations WHERE id = ?", org.id)
    assert json.loads(stored[0][0])["max_length"] == 12


# --------------------------------------------------------------------------- passwords


async def test_a_reset_password_is_shown_once_and_must_be_changed(
    running: RunningService,
) -> None:
    async with running.client() as client:
        org = await acme(running, client)
        carol = await org.create(login="carol", password=USER_PASSWORD)
        session = await org.token("carol", USER_PASSWORD)
        room = await org.create(login="room-2", kind="resource")

        reset = await client.post(f"{org.accounts}/{carol['id']}/password", headers=org.manager)
        assert reset.status_code == 200, reset.text
        answered = matches(reset, ACCOUNT_WITH_PASSWORD)
        otp = answered["one_time_password"]
        assert answered["must_change_password"] is True and len(otp) >= 12
        again = await client.get(f"{org.accounts}/{carol['id']}", headers=org.manager)
        assert "one_time_password" not in again.json()
        # The old session and the old password are dead.
        refused(await client.get(f"{API}/auth/me", headers=session), 401)
        refused(await org.sign_in("carol", USER_PASSWORD), 401)
        # The new one opens a session that may only change it.
        first = await org.sign_in("carol", otp)
        assert first.status_code == 201 and first.json()["password_change_required"] is True
        limited = bearer(first.json()["token"])
        refused(await client.get(f"{org.accounts}/{carol['id']}", headers=limited), 403)
        changed = await client.post(
            f"{API}/auth/password",
            json={"current_password": otp, "new_password": "carol's own secret"},
            headers=limited,
        )
        assert changed.status_code == 200
        full = bearer(changed.json()["token"])
        own = await client.get(f"{org.accounts}/{carol['id']}", headers=full)
        assert own.status_code == 200 and own.json()["must_change_password"] is False

        before = events(running)
        me = (await client.get(f"{API}/auth/me", headers=org.manager)).json()["account_id"]
        refused(await client.post(f"{org.accounts}/{me}/password", headers=org.manager), 403)
        refused(
            await client.post(f"{org.accounts}/{room['id']}/password", headers=org.manager), 422
        )
        refused(await client.post(f"{org.accounts}/{carol['id']}/password", headers=full), 403)
        assert events(running) == before
    resets = events(running, "account.password_reset")
    assert [(e["target_id"], e["actor"]) for e in resets] == [(carol["id"], "admin")]
    assert all(otp not in json.dumps(e) for e in events(running))


# --------------------------------------------------------------------------- scope


async def test_device_owners_read_only_their_own_account(running: RunningService) -> None:
    async with running.client() as client:
        org = await acme(running, client)
        dave = await org.create(login="dave", password=USER_PASSWORD)
        erin = await org.create(login="erin")
        owner = await org.token("dave", USER_PASSWORD)
        own = await client.get(f"{org.accounts}/{dave['id']}", headers=owner)
        assert own.status_code == 200 and matches(own, ACCOUNT)["login"] == "dave"
        before = events(running)
        for response in (
            await client.get(org.accounts, headers=owner),
            await client.get(f"{org.accounts}/{erin['id']}", headers=owner),
            await client.get(f"{org.accounts}/no-such-id", headers=owner),
            await client.post(org.accounts, json={"login": "frank"}, headers=owner),
            await client.patch(
                f"{org.accounts}/{dave['id']}", json={"display_name": "D"}, headers=owner
            ),
            await client.delete(f"{org.accounts}/{erin['id']}", headers=owner),
            await client.post(f"{org.accounts}/{erin['id']}/password", headers=owner),
            await client.get(org.templates, headers=owner),
            await client.get(f"{API}/vendors", headers=owner),
        ):
            refused(response, 403)
        assert events(running) == before


async def test_another_organisations_ids_are_not_found(running: RunningService) -> None:
    async with running.client() as client:
        a = await acme(running, client)
        b = await organisation(client, a.supervisor, "globex")
        theirs = await b.create(login="bella")
        template = await client.post(
            b.templates, json={"name": "B only", "kind": "user"}, headers=b.manager
        )
        their_template = template.json()["id"]
        before = events(running)
        for auth in (a.manager, a.supervisor):
            # B's things under A's organisation: not found, even for the supervisor.
            for response in (
                await client.get(f"{a.accounts}/{theirs['id']}", headers=auth),
                await client.patch(
                    f"{a.accounts}/{theirs['id']}", json={"display_name": "x"}, headers=auth
                ),
                await client.delete(f"{a.accounts}/{theirs['id']}", headers=auth),
                await client.post(f"{a.accounts}/{theirs['id']}/password", headers=auth),
                await client.get(f"{a.templates}/{their_template}", headers=auth),
                await client.patch(
                    f"{a.templates}/{their_template}", json={"description": "x"}, headers=auth
                ),
                await client.delete(f"{a.templates}/{their_template}", headers=auth),
            ):
                refused(response, 404)
            # ...and a template of B cannot make an account in A.
            refused(
                await client.post(
                    a.accounts, json={"login": "sneaky", "template": their_template}, headers=auth
                ),
                422,
                "template",
            )
        # B's organisation itself is not there for A's manager.
        for response in (
            await client.get(b.accounts, headers=a.manager),
            await client.get(f"{b.accounts}/{theirs['id']}", headers=a.manager),
            await client.post(b.accounts, json={"login": "sneaky"}, headers=a.manager),
            await client.get(b.policy, headers=a.manager),
            await client.put(
                b.policy,
                json={"min_length": 1, "max_length": 9, "allowed_characters": "a-z"},
                headers=a.manager,
            ),
            await client.get(b.templates, headers=a.manager),
        ):
            refused(response, 404)
        assert events(running) == before
        # Logins are per organisation: B's login is free in A.
        assert (await a.create(login="bella"))["organisation_id"] == a.id


async def test_accounts_that_own_devices_are_not_removed(running: RunningService) -> None:
    async with running.client() as client:
        org = await acme(running, client)
        gina = await org.create(login="gina")
        database(
            running,
            "INSERT INTO devices (id, organisation_id, owner_id, platform, protocol, created_at,"
            " updated_at) VALUES ('dev-1', ?, ?, 'android', 'wsdm', 'now', 'now')",
            org.id,
            gina["id"],
        )
        kept = await client.delete(f"{org.accounts}/{gina['id']}", headers=org.manager)
        assert "owns 1 device" in refused(kept, 422)["detail"]
        assert (
            await client.get(f"{org.accounts}/{gina['id']}", headers=org.manager)
        ).status_code == 200
        assert events(running, "account.removed") == []
        database(running, "DELETE FROM devices WHERE id = 'dev-1'")
        assert (
            await client.delete(f"{org.accounts}/{gina['id']}", headers=org.manager)
        ).status_code == 204
    assert [e["target_id"] for e in events(running, "account.removed")] == [gina["id"]]


# --------------------------------------------------------------------------- vendors


async def test_vendor_admins_look_after_their_own_organisations(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = bearer(await supervisor_token(client, running.supervisor_password))
        vendors = f"{API}/vendors"
        created = await client.post(
            vendors,
            json={"login": "reseller", "display_name": "Reseller", "email": "ops@reseller.example"},
            headers=supervisor,
        )
        assert created.status_code == 201, created.text
        first = matches(created, VENDOR_WITH_PASSWORD)
        assert first["must_change_password"] is True and first["organisations"] == []
        assert created.headers["Location"].endswith(first["id"])
        other = await client.post(
            vendors, json={"login": "group-it", "password": USER_PASSWORD}, headers=supervisor
        )
        second = other.json()
        assert second["one_time_password"] is None and second["must_change_password"] is False
        before = events(running)
        refused(await client.post(vendors, json={"login": "reseller"}, headers=supervisor), 409)
        refused(
            await client.post(vendors, json={"login": "bad login"}, headers=supervisor),
            422,
            "login",
        )
        refused(
            await client.post(vendors, json={"login": "v3", "kind": "manager"}, headers=supervisor),
            422,
            "kind",
        )
        assert events(running) == before

        # The first vendor signs in without an organisation, changes its one-time password...
        token = await client.post(
            f"{API}/auth/token", json={"login": "reseller", "password": first["one_time_password"]}
        )
        assert token.json()["password_change_required"] is True
        changed = await client.post(
            f"{API}/auth/password",
            json={"current_password": first["one_time_password"], "new_password": USER_PASSWORD},
            headers=bearer(token.json()["token"]),
        )
        reseller = bearer(changed.json()["token"])
        group = await client.post(
            f"{API}/auth/token", json={"login": "group-it", "password": USER_PASSWORD}
        )
        group_it = bearer(group.json()["token"])
        # ...and looks after the organisations it creates, and no others.
        mine = await organisation(client, reseller, "shop")
        theirs = await organisation(client, group_it, "group")
        listed = await client.get(f"{API}/organisations", headers=reseller)
        assert [o["code"] for o in listed.json()["items"]] == ["shop"]
        for response in (
            await client.get(f"{API}/organisations/group", headers=reseller),
            await client.get(theirs.accounts, headers=reseller),
            await client.post(theirs.accounts, json={"login": "spy"}, headers=reseller),
            await client.get(theirs.policy, headers=reseller),
        ):
            refused(response, 404)
        # In its own, it acts as a manager with every right.
        boss = await mine.create(
            reseller, login="boss", kind="manager", rights=["accounts", "audit", "wipe"]
        )
        assert boss["rights"] == ["accounts", "audit", "wipe"]
        # Vendors are the supervisor's to manage, not each other's or managers'.
        for auth in (reseller, mine.manager):
            refused(await client.get(vendors, headers=auth), 403)
            refused(await client.get(f"{vendors}/{second['id']}", headers=auth), 403)

        shown = await client.get(f"{vendors}/{first['id']}", headers=supervisor)
        assert matches(shown, VENDOR)["organisations"] == ["shop"]
        assert "one_time_password" not in shown.json()
        page = page_of(
            await client.get(vendors, params={"sort": "-login"}, headers=supervisor), VENDOR
        )
        assert [v["login"] for v in page["items"]] == ["reseller", "group-it"]
        filtered = await client.get(vendors, params={"filter[login]": "group"}, headers=supervisor)
        assert [v["login"] for v in filtered.json()["items"]] == ["group-it"]
        refused(await client.get(f"{vendors}/{boss['id']}", headers=supervisor), 404)

        # Deactivated: its sessions end at once; its organisations go on.
        off = await client.patch(
            f"{vendors}/{second['id']}",
            json={"active": False, "email": "it@group.example"},
            headers=supervisor,
        )
        assert off.status_code == 200 and matches(off, VENDOR)["active"] is False
        refused(await client.get(f"{API}/auth/me", headers=group_it), 401)
        refused(
            await client.post(
                f"{API}/auth/token", json={"login": "group-it", "password": USER_PASSWORD}
            ),
            401,
        )
        assert (await client.get(theirs.accounts, headers=theirs.manager)).status_code == 200

        # Removed: its organisations stay, in the supervisor's care.
        assert (
            await client.delete(f"{vendors}/{first['id']}", headers=supervisor)
        ).status_code == 204
        refused(await client.get(f"{vendors}/{first['id']}", headers=supervisor), 404)
        refused(await client.get(f"{API}/auth/me", headers=reseller), 401)
        assert (
            await client.get(f"{API}/organisations/shop", headers=supervisor)
        ).status_code == 200
        assert database(running, "SELECT vendor_id FROM organisations WHERE code = 'shop'") == [
            (None,)
        ]
    assert [e["details"]["login"] for e in events(running, "vendor.created")] == [
        "reseller",
        "group-it",
    ]
    changed_events = events(running, "vendor.changed")
    assert [(e["target_id"], e["details"]["active"]) for e in changed_events] == [
        (second["id"], False)
    ]
    (removal,) = events(running, "vendor.removed")
    assert removal["target_id"] == first["id"] and removal["details"]["organisations"] == ["shop"]


# --------------------------------------------------------------------------- organisations


async def test_an_inactive_organisations_accounts_cannot_sign_in(running: RunningService) -> None:
    async with running.client() as client:
        org = await acme(running, client)
        assert (await client.get(org.accounts, headers=org.manager)).status_code == 200
        off = await client.patch(
            f"{API}/organisations/{org.code}", json={"active": False}, headers=org.supervisor
        )
        assert off.status_code == 200
        refused(await client.get(org.accounts, headers=org.manager), 401)
        refused(await org.sign_in("admin", MANAGER_PASSWORD), 401)
        # The supervisor still manages it (e.g. to look before removing it).
        assert (await client.get(org.accounts, headers=org.supervisor)).status_code == 200
