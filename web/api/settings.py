"""Configuration → Services over the API; ETags are settings revisions."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, json

from engine import service_settings as domain

from ..context import service
from ..requests import if_match_revision, json_object, principal, refuse_unknown, take

blueprint = Blueprint("api_settings", __name__)


def _with_etag(view: dict[str, Any]) -> Response:
    response = Response(json.dumps(view), content_type="application/json")
    response.headers["ETag"] = f'"{view["revision"]}"'
    return response


@blueprint.get("/config/services")
async def system_view() -> Response:
    context = service()
    return _with_etag(
        await domain.system_settings(context.store, await principal(), context.deployment)
    )


@blueprint.patch("/config/services/<name>")
async def change_system(name: str) -> Response:
    context = service()
    who = await principal()
    body = await json_object()
    view = await domain.change_system_settings(
        context.store,
        who,
        context.deployment,
        name,
        body,
        expected_revision=if_match_revision(),
    )
    return _with_etag(view)


@blueprint.get("/organisations/<key>/config/services")
async def organisation_view(key: str) -> Response:
    context = service()
    return _with_etag(
        await domain.organisation_settings(
            context.store, await principal(), context.deployment, key
        )
    )


@blueprint.patch("/organisations/<key>/config/services/<name>")
async def change_organisation(key: str, name: str) -> Response:
    context = service()
    who = await principal()
    body = await json_object()
    refuse_unknown(body, "use_system_wide", "overrides", "clear")
    clear = take(body, "clear", list, [])
    view = await domain.change_organisation_settings(
        context.store,
        who,
        context.deployment,
        key,
        name,
        use_system_wide=take(body, "use_system_wide", (bool, type(None)), None),
        overrides=take(body, "overrides", dict, {}),
        clear=[str(item) for item in clear],
        expected_revision=if_match_revision(),
    )
    return _with_etag(view)
