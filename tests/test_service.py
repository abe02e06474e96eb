"""The real service on loopback ports: health, sign-in, organisations, settings, bad input."""

from __future__ import annotations

import sqlite3

import httpx
import trio

from engine import __version__

from .conftest import NEW_PASSWORD, RunningService, bearer, supervisor_token


def audit_actions(running: RunningService) -> list[str]:
    with sqlite3.connect(running.bootstrap.database.path) as conn:
        return [row[0] for row in conn.execute("SELECT action FROM audit_events ORDER BY at")]


async def test_healthz_over_http_https_and_http2(running: RunningService) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        plain = await client.get(f"{running.http_url}/healthz")
    async with httpx.AsyncClient(verify=running.tls_context(), timeout=10) as client:
        tls = await client.get(f"{running.https_url}/healthz")
    async with httpx.AsyncClient(verify=running.tls_context(), http2=True, timeout=10) as client:
        h2 = await client.get(f"{running.https_url}/healthz")
    for response in (plain, tls, h2):
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        assert response.json()["version"] == __version__
        assert float(response.headers["Server-Timing"].removeprefix("app;dur=")) >= 0
    assert (plain.http_version, tls.http_version, h2.http_version) == (
        "HTTP/1.1",
        "HTTP/1.1",
        "HTTP/2",
    )


async def test_one_time_password_must_be_changed_first(running: RunningService) -> None:
    async with running.client() as client:
        first = await client.post(
            "/api/v1/auth/token",
            json={"login": "supervisor", "password": running.supervisor_password},
        )
        assert first.status_code == 201
        assert first.json()["password_change_required"] is True
        limited = bearer(first.json()["token"])
        refused = await client.get("/api/v1/organisations", headers=limited)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        short = await client.post(
            "/api/v1/auth/password",
            json={"current_password": running.supervisor_password, "new_password": "short"},
            headers=limited,
        )
        assert short.status_code == 422 and short.json()["field"] == "new_password"
        changed = await client.post(
            "/api/v1/auth/password",
            json={"current_password": running.supervisor_password, "new_password": NEW_PASSWORD},
            headers=limited,
        )
        assert changed.status_code == 200
        full = bearer(changed.json()["token"])
        assert (await client.get("/api/v1/organisations", headers=full)).status_code == 200
        # The limited token was replaced, and the one-time password is spent.
        assert (await client.get("/api/v1/auth/me", headers=limited)).status_code == 401
        again = await client.post(
            "/api/v1/auth/token",
            json={"login": "supervisor", "password": running.supervisor_password},
        )
        assert again.status_code == 401
    assert "account.password_changed" in audit_actions(running)


async def test_wrong_passwords_are_throttled(running: RunningService) -> None:
    async with running.client() as client:
        statuses = []
        for _ in range(6):
            response = await client.post(
                "/api/v1/auth/token", json={"login": "supervisor", "password": "wrong guess"}
            )
            statuses.append(response.status_code)
        assert statuses == [401] * 5 + [429]
        # Locked: even the right password waits, and the client is told how long.
        right = await client.post(
            "/api/v1/auth/token",
            json={"login": "supervisor", "password": running.supervisor_password},
        )
        assert right.status_code == 429
        assert int(right.headers["Retry-After"]) > 0
        unknown = await client.post(
            "/api/v1/auth/token", json={"login": "nobody", "password": "wrong guess"}
        )
        assert unknown.status_code == 401
    assert audit_actions(running).count("account.login_failed") == 5


async def test_logout_revokes_the_token_at_once(running: RunningService) -> None:
    async with running.client() as client:
        token = await supervisor_token(client, running.supervisor_password)
        assert (await client.get("/api/v1/auth/me", headers=bearer(token))).status_code == 200
        assert (await client.delete("/api/v1/auth/token", headers=bearer(token))).status_code == 204
        after = await client.get("/api/v1/auth/me", headers=bearer(token))
        assert after.status_code == 401
        assert after.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await client.get("/api/v1/auth/me")).status_code == 401


async def test_organisations_and_their_service_settings(running: RunningService) -> None:
    async with running.client() as client:
        auth = bearer(await supervisor_token(client, running.supervisor_password))
        created = await client.post(
            "/api/v1/organisations",
            json={
                "code": "acme",
                "short_name": "Acme",
                "licences": 100,
                "first_manager_password": "manager secret 1",
            },
            headers=auth,
        )
        assert created.status_code == 201, created.text
        assert created.headers["Location"].endswith(created.json()["id"])
        duplicate = await client.post(
            "/api/v1/organisations", json={"code": "acme", "short_name": "Other"}, headers=auth
        )
        assert duplicate.status_code == 409
        bad_code = await client.post(
            "/api/v1/organisations", json={"code": "Not Valid!", "short_name": "X"}, headers=auth
        )
        assert bad_code.status_code == 422 and bad_code.json()["field"] == "code"
        assert (await client.get("/api/v1/organisations/acme", headers=auth)).json()[
            "licences"
        ] == 100

        # The organisation's first manager signs in with the organisation code.
        manager = await client.post(
            "/api/v1/auth/token",
            json={"organisation": "acme", "login": "admin", "password": "manager secret 1"},
        )
        assert manager.status_code == 201
        manager_auth = bearer(manager.json()["token"])

        # Override one WSDM value for the organisation; the rest follows the system.
        view = await client.patch(
            "/api/v1/organisations/acme/config/services/oma_dm",
            json={"use_system_wide": False, "overrides": {"connection_interval": 15}},
            headers=manager_auth,
        )
        assert view.status_code == 200, view.text
        effective = view.json()["services"]["oma_dm"]["effective"]
        assert effective["connection_interval"] == {"value": 15, "source": "organisation"}
        assert effective["service_url"]["source"] == "system"
        etag = view.headers["ETag"]

        # The supervisor changes the system-wide URL: the organisation follows it.
        system = await client.patch(
            "/api/v1/config/services/oma_dm",
            json={"service_url": "https://dm.example.com/omadm"},
            headers=auth,
        )
        assert system.status_code == 200, system.text
        view = await client.get("/api/v1/organisations/acme/config/services", headers=auth)
        oma_dm = view.json()["services"]["oma_dm"]["effective"]
        assert oma_dm["service_url"]["value"] == "https://dm.example.com/omadm"
        assert oma_dm["connection_interval"]["value"] == 15

        # A change based on a stale read is refused; a bad value names its field.
        stale = await client.patch(
            "/api/v1/organisations/acme/config/services/oma_dm",
            json={"overrides": {"connection_interval": 30}},
            headers={**manager_auth, "If-Match": etag},
        )
        assert stale.status_code == 200  # etag was current: no change happened in between
        stale = await client.patch(
            "/api/v1/organisations/acme/config/services/oma_dm",
            json={"overrides": {"connection_interval": 45}},
            headers={**manager_auth, "If-Match": etag},
        )
        assert stale.status_code == 412
        wrong = await client.patch(
            "/api/v1/config/services/oma_dm", json={"connection_interval": 0}, headers=auth
        )
        assert wrong.status_code == 422 and "connection_interval" in wrong.json()["field"]
        # Managers do not touch system-wide values.
        forbidden = await client.patch(
            "/api/v1/config/services/oma_dm", json={"connection_interval": 5}, headers=manager_auth
        )
        assert forbidden.status_code == 403
    actions = audit_actions(running)
    assert actions.count("settings.organisation_changed") == 2
    assert actions.count("settings.system_changed") == 1
    assert "organisation.created" in actions


async def test_bad_requests_get_problem_details_and_change_nothing(
    running: RunningService,
) -> None:
    async with running.client() as client:
        auth = bearer(await supervisor_token(client, running.supervisor_password))
        before = audit_actions(running)
        cases = [
            (
                client.post(
                    "/api/v1/organisations",
                    content=b"{not json",
                    headers={**auth, "Content-Type": "application/json"},
                ),
                400,
            ),
            (
                client.post(
                    "/api/v1/organisations",
                    content=b"code=x",
                    headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
                ),
                415,
            ),
            (client.post("/api/v1/organisations", json=["a", "list"], headers=auth), 400),
            (
                client.post(
                    "/api/v1/organisations",
                    json={"code": "x1", "short_name": "X", "licences": True},
                    headers=auth,
                ),
                422,
            ),
            (
                client.post(
                    "/api/v1/organisations",
                    json={"code": "x2", "short_name": "X", "colour": "red"},
                    headers=auth,
                ),
                422,
            ),
            (
                client.post(
                    "/api/v1/organisations",
                    content=b"x" * (17 * 1024 * 1024),
                    headers={**auth, "Content-Type": "application/json"},
                ),
                413,
            ),
            (client.get("/api/v1/no-such-thing", headers=auth), 404),
            (client.delete("/api/v1/organisations", headers=auth), 405),
            (client.get("/api/v1/organisations", headers={"Authorization": "Bearer nope"}), 401),
        ]
        for request, status in cases:
            response = await request
            assert response.status_code == status, (status, response.text)
            if status != 413:  # the body limit answers before the app sees the request
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["status"] == status
        listed = await client.get("/api/v1/organisations", headers=auth)
        assert listed.json()["items"] == []
    assert audit_actions(running) == before


async def test_parallel_guesses_cannot_outrun_the_lock_out(running: RunningService) -> None:
    async with running.client() as client:
        await supervisor_token(client, running.supervisor_password)
        statuses: list[int] = []

        async def guess(password: str) -> None:
            response = await client.post(
                "/api/v1/auth/token", json={"login": "supervisor", "password": password}
            )
            statuses.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(guess, f"wrong guess {n}")
        # Only the free attempts were checked at all; everything else was told to wait,
        # and so is the right password now.
        assert sorted(statuses) == [401] * 5 + [429] * 15
        await guess(NEW_PASSWORD)
        assert statuses[-1] == 429


async def test_a_password_change_ends_every_other_session(running: RunningService) -> None:
    async with running.client() as client:
        first = await supervisor_token(client, running.supervisor_password)
        second = await client.post(
            "/api/v1/auth/token", json={"login": "supervisor", "password": NEW_PASSWORD}
        )
        other = bearer(second.json()["token"])
        changed = await client.post(
            "/api/v1/auth/password",
            json={"current_password": NEW_PASSWORD, "new_password": "yet another secret"},
            headers=bearer(first),
        )
        assert changed.status_code == 200
        assert (await client.get("/api/v1/auth/me", headers=other)).status_code == 401
        assert (await client.get("/api/v1/auth/me", headers=bearer(first))).status_code == 401
        fresh = bearer(changed.json()["token"])
        assert (await client.get("/api/v1/auth/me", headers=fresh)).status_code == 200


async def test_sign_in_never_redirects_to_another_site(running: RunningService) -> None:
    async with running.client() as client:
        await supervisor_token(client, running.supervisor_password)
        for target in ("/\\evil.example/x", "//evil.example/x", "/\tevil.example", "https://e.x"):
            page = await client.get("/sign-in", params={"next": target})
            done = await client.post(
                "/sign-in",
                data={
                    "login": "supervisor",
                    "password": NEW_PASSWORD,
                    "next": target,
                    "csrf_token": client.cookies["emm_login_csrf"],
                },
            )
            assert page.status_code == 200 and done.status_code == 302
            assert done.headers["location"] in ("/", "/admin/organisations"), target
            client.cookies.clear()


async def test_a_lock_out_does_not_tell_which_accounts_exist(running: RunningService) -> None:
    async with running.client() as client:
        answers: dict[str, list[int]] = {}
        for login in ("supervisor", "nobody-at-all"):
            for _ in range(6):
                response = await client.post(
                    "/api/v1/auth/token", json={"login": login, "password": "wrong guess"}
                )
                answers.setdefault(login, []).append(response.status_code)
        # An account that exists and one that does not are locked out alike.
        assert answers["supervisor"] == answers["nobody-at-all"] == [401] * 5 + [429]
        # Unknown organisations too.
        statuses = []
        for _ in range(6):
            response = await client.post(
                "/api/v1/auth/token",
                json={"organisation": "no-such-org", "login": "x", "password": "wrong guess"},
            )
            statuses.append(response.status_code)
        assert statuses == [401] * 5 + [429]
