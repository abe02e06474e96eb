"""Admin portal: the messages an organisation broadcasts to its device owners.

Pages read through engine/messages.py and the forms call it, as the REST routes of
web/api/messages.py do; device owners read their messages on My devices (people.py).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, url_for
from werkzeug.datastructures import MultiDict

from engine import device_groups, messages as domain, organisations
from engine.listing import ListQuery
from engine.principals import AccountKind, Principal, holds

from ..context import service
from .listing import ListView, columns, list_query
from .pages import action, done, page, render

ADMINS = (AccountKind.SUPERVISOR, AccountKind.VENDOR, AccountKind.MANAGER)

_MESSAGES = "/organisations/{organisation}/messages"
_MESSAGE = _MESSAGES + "/{message}"

MESSAGE_COLUMNS = columns(
    domain.LIST,
    ("title", "Title"),
    ("severity", "Severity"),
    ("state", "State"),
    ("audience", "For"),
    ("valid_from", "Shown from"),
    ("valid_until", "Shown until"),
    ("created_by", "Posted by"),
    ("created_at", "Posted"),
)
SEVERITY_LABELS = {"info": "Information", "warning": "Warning", "urgent": "Urgent"}
#: How many device groups the form offers.
GROUP_CHOICES = 500


def _store() -> Any:
    return service().store


def audience_text(message: dict[str, Any]) -> str:
    if message["audience"] == "all":
        return "All device owners"
    names = ", ".join(group["name"] for group in message["groups"])
    return f"Owners of devices in {names}" if names else "Nobody (its groups were removed)"


def _row(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the list shows it: words for its audience, author and end."""
    author = message["created_by"]
    return message | {
        "severity": SEVERITY_LABELS[message["severity"]],
        "audience": audience_text(message),
        "created_by": author["login"] if author else "",
        "valid_until": message["valid_until"] or "until withdrawn",
    }


def _field(form: MultiDict, name: str) -> str | None:
    return str(form.get(name, "")).strip() or None


def new_message(form: MultiDict) -> domain.NewMessage:
    """The message a form asks for. The audience radio decides: groups ticked while "all"
    is chosen are left out rather than refused."""
    audience = str(form.get("audience", "all"))
    return domain.NewMessage(
        title=str(form.get("title", "")),
        body=str(form.get("body", "")),
        severity=str(form.get("severity", "info")),
        audience=audience,
        groups=form.getlist("groups") if audience == "groups" else (),
        valid_from=_field(form, "valid_from"),
        valid_until=_field(form, "valid_until"),
    )


def register(blueprint: Blueprint) -> None:
    def message_url(code: str, message_id: str) -> str:
        return url_for("portal.message", organisation=code, message=message_id)

    @page(blueprint, "/admin/o/<organisation>/messages", kinds=ADMINS)
    async def messages(who: Principal, organisation: str) -> Response:
        org = await organisations.get_organisation(_store(), who, organisation)
        query = list_query(domain.LIST)
        found = await domain.list_messages(_store(), who, organisation, query)
        groups = await device_groups.list_groups(
            _store(), who, organisation, ListQuery(GROUP_CHOICES, 0, "name")
        )
        return await render(
            "portal/messages/list.html",
            who,
            organisation=org,
            listing=ListView(query, found),
            columns=MESSAGE_COLUMNS,
            rows=[_row(message) for message in found.items],
            link=lambda row: message_url(org["code"], row["id"]),
            groups=groups.items,
            severities=SEVERITY_LABELS,
            may_change=holds(who, domain.RIGHT),
            right=domain.RIGHT.value,
        )

    @action(blueprint, "/admin/o/<organisation>/messages", api=("POST", _MESSAGES))
    async def message_post(who: Principal, form: MultiDict, organisation: str) -> Response:
        org = await organisations.get_organisation(_store(), who, organisation)
        posted = await domain.post_message(_store(), who, organisation, new_message(form))
        return done(message_url(org["code"], posted["id"]), f"Message {posted['title']} posted.")

    @page(blueprint, "/admin/o/<organisation>/messages/<message>", kinds=ADMINS)
    async def message(who: Principal, organisation: str, message: str) -> Response:
        org = await organisations.get_organisation(_store(), who, organisation)
        shown = await domain.get_message(_store(), who, organisation, message)
        return await render(
            "portal/messages/message.html",
            who,
            organisation=org,
            message=shown,
            audience=audience_text(shown),
            severities=SEVERITY_LABELS,
            may_change=holds(who, domain.RIGHT),
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/messages/<message>/withdraw",
        api=("POST", _MESSAGE + "/withdraw"),
    )
    async def message_withdraw(
        who: Principal, form: MultiDict, organisation: str, message: str
    ) -> Response:
        org = await organisations.get_organisation(_store(), who, organisation)
        withdrawn = await domain.withdraw_message(_store(), who, organisation, message)
        return done(message_url(org["code"], message), f"Message {withdrawn['title']} withdrawn.")
