"""``/api/v1``: an organisation's accounts, account templates and name policy; vendor admins."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import accounts as domain
from engine.listing import ListQuery
from engine.principals import Principal, Right
from engine.store import Store

from ..context import service
from .operations import operation
from .schema import (
    Schema,
    array,
    boolean,
    component,
    enum,
    integer,
    nullable,
    obj,
    page_of,
    record,
    string,
    timestamp,
)

blueprint = Blueprint("api_accounts", __name__)

_ACCOUNTS = "/organisations/{organisation}/accounts"
_TEMPLATES = "/organisations/{organisation}/account-templates"


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


_KIND = enum(*(kind.value for kind in domain.ORGANISATION_KINDS))
_RIGHTS = array(
    enum(*(right.value for right in Right)),
    uniqueItems=True,
    description="managers only; never more than the caller holds",
)
_LOGIN = string(minLength=1, maxLength=128, description="checked against the name policy")
_DISPLAY_NAME = string(maxLength=200)
_EMAIL = nullable(string(maxLength=254, pattern=_anchored(domain.EMAIL_PATTERN.pattern)))
_PHONE = nullable(string(maxLength=32, pattern=_anchored(domain.PHONE_PATTERN.pattern)))
_LOCALE = nullable(
    string(maxLength=35, pattern=_anchored(domain.LOCALE_PATTERN.pattern), description="en-GB")
)
_PASSWORD = string(description="omit to have a one-time password generated (answered once)")
_ONE_TIME = nullable(
    string(description="shown this once; the account must change it at its first sign-in")
)


_ACCOUNT_MEMBERS: dict[str, Schema] = {
    "id": string(),
    "organisation_id": string(),
    "login": string(),
    "kind": _KIND,
    "display_name": string(),
    "email": nullable(string()),
    "phone_number": nullable(string()),
    "locale": nullable(string()),
    "rights": array(enum(*(right.value for right in Right))),
    "active": boolean(),
    "template": nullable(string(description="id of the template it was made from")),
    "must_change_password": boolean(),
    "created_at": timestamp(),
    "updated_at": timestamp(),
}
ACCOUNT = component("Account", record(_ACCOUNT_MEMBERS))
ACCOUNT_WITH_PASSWORD = component(
    "AccountWithPassword",
    record({**_ACCOUNT_MEMBERS, "one_time_password": _ONE_TIME}),
)
_TEMPLATE_MEMBERS: dict[str, Schema] = {
    "id": string(),
    "name": string(),
    "kind": _KIND,
    "rights": array(enum(*(right.value for right in Right))),
    "locale": nullable(string()),
    "description": string(),
    "created_at": timestamp(),
    "updated_at": timestamp(),
}
TEMPLATE = component("AccountTemplate", record(_TEMPLATE_MEMBERS))
_POLICY_MEMBERS: dict[str, Schema] = {
    "min_length": integer(minimum=1, maximum=128),
    "max_length": integer(minimum=1, maximum=128),
    "allowed_characters": string(
        minLength=1,
        maxLength=200,
        description="characters and ranges, as in a character class: a-z0-9._-",
    ),
    "forbidden_words": array(
        string(minLength=1, maxLength=64),
        maxItems=100,
        description="substrings no login id may contain (case ignored)",
    ),
}
NAME_POLICY = component(
    "NamePolicy",
    obj(
        {
            **_POLICY_MEMBERS,
            "rule": string(description="the policy in words, to show users"),
            "default": boolean(description="the service's default policy applies"),
        },
        *_POLICY_MEMBERS,
        "rule",
        "default",
    ),
)
_VENDOR_MEMBERS: dict[str, Schema] = {
    "id": string(),
    "login": string(),
    "display_name": string(),
    "email": nullable(string()),
    "active": boolean(),
    "must_change_password": boolean(),
    "organisations": array(string(), description="codes of the organisations it looks after"),
    "created_at": timestamp(),
    "updated_at": timestamp(),
}
VENDOR = component("Vendor", record(_VENDOR_MEMBERS))
VENDOR_WITH_PASSWORD = component(
    "VendorWithPassword",
    obj({**_VENDOR_MEMBERS, "one_time_password": _ONE_TIME}, *_VENDOR_MEMBERS, "one_time_password"),
)


def _store() -> Store:
    return service().store


# --------------------------------------------------------------------------- accounts


@operation(
    blueprint,
    "GET",
    _ACCOUNTS,
    summary="Accounts of an organisation (managers and system accounts)",
    tag="accounts",
    listing=domain.ACCOUNT_LIST,
    responses={200: page_of(ACCOUNT)},
)
async def list_accounts(who: Principal, organisation: str, query: ListQuery) -> dict[str, Any]:
    page = await domain.list_accounts(_store(), who, organisation, query)
    return page.as_json()


@operation(
    blueprint,
    "POST",
    _ACCOUNTS,
    summary="Create an account from a template (needs the accounts right)",
    description="Without template, the organisation's default template of the kind (user "
    "unless kind says otherwise) is used. A manager's rights never exceed the caller's. "
    "Without password, a one-time password is generated and answered this once.",
    tag="accounts",
    body=obj(
        {
            "login": _LOGIN,
            "kind": _KIND,
            "template": string(description="template id; presets kind, rights and locale"),
            "display_name": _DISPLAY_NAME,
            "email": _EMAIL,
            "phone_number": _PHONE,
            "locale": _LOCALE,
            "rights": _RIGHTS,
            "password": _PASSWORD,
        },
        "login",
    ),
    example={"login": "jane.doe", "display_name": "Jane Doe", "email": "jane.doe@example.com"},
    responses={201: ACCOUNT_WITH_PASSWORD},
)
async def create_account(
    who: Principal, organisation: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    created = await domain.create_account(_store(), who, organisation, domain.NewAccount(**body))
    location = f"/api/v1/organisations/{organisation}/accounts/{created['id']}"
    return created, 201, {"Location": location}


@operation(
    blueprint,
    "GET",
    _ACCOUNTS + "/{account}",
    summary="One account (device owners: only their own)",
    tag="accounts",
    responses={200: ACCOUNT},
)
async def get_account(who: Principal, organisation: str, account: str) -> dict[str, Any]:
    return await domain.get_account(_store(), who, organisation, account)


@operation(
    blueprint,
    "PATCH",
    _ACCOUNTS + "/{account}",
    summary="Change an account; active=false ends its sessions at once",
    tag="accounts",
    body=obj(
        {
            "display_name": _DISPLAY_NAME,
            "email": _EMAIL,
            "phone_number": _PHONE,
            "locale": _LOCALE,
            "rights": _RIGHTS,
            "active": boolean(),
            "template": string(description="template id of the same kind; presets not re-applied"),
        }
    ),
    example={"display_name": "Jane Q. Doe", "phone_number": "+44 20 7946 0000"},
    responses={200: ACCOUNT},
)
async def update_account(
    who: Principal, organisation: str, account: str, body: dict[str, Any]
) -> dict[str, Any]:
    return await domain.update_account(_store(), who, organisation, account, body)


@operation(
    blueprint,
    "DELETE",
    _ACCOUNTS + "/{account}",
    summary="Remove an account that owns no devices",
    tag="accounts",
    responses={204: None},
)
async def remove_account(who: Principal, organisation: str, account: str) -> tuple[str, int]:
    await domain.remove_account(_store(), who, organisation, account)
    return "", 204


@operation(
    blueprint,
    "POST",
    _ACCOUNTS + "/{account}/password",
    summary="Set a new one-time password (answered once); the account's sessions end",
    tag="accounts",
    responses={200: ACCOUNT_WITH_PASSWORD},
)
async def reset_password(who: Principal, organisation: str, account: str) -> dict[str, Any]:
    return await domain.reset_password(_store(), who, organisation, account)


# --------------------------------------------------------------------------- templates

_TEMPLATE_VALUES: dict[str, Schema] = {
    "name": string(minLength=1, maxLength=100),
    "rights": _RIGHTS,
    "locale": _LOCALE,
    "description": string(maxLength=500),
}


@operation(
    blueprint,
    "GET",
    _TEMPLATES,
    summary="Account templates of an organisation",
    tag="accounts",
    listing=domain.TEMPLATE_LIST,
    responses={200: page_of(TEMPLATE)},
)
async def list_templates(who: Principal, organisation: str, query: ListQuery) -> dict[str, Any]:
    page = await domain.list_templates(_store(), who, organisation, query)
    return page.as_json()


@operation(
    blueprint,
    "POST",
    _TEMPLATES,
    summary="Create an account template (needs the configuration right)",
    tag="accounts",
    body=obj({**_TEMPLATE_VALUES, "kind": _KIND}, "name", "kind"),
    example={
        "name": "Helpdesk",
        "kind": "manager",
        "rights": ["commands"],
        "locale": "en-GB",
        "description": "Sends commands to devices; changes nothing else",
    },
    responses={201: TEMPLATE},
)
async def create_template(
    who: Principal, organisation: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    created = await domain.create_template(_store(), who, organisation, domain.NewTemplate(**body))
    location = f"/api/v1/organisations/{organisation}/account-templates/{created['id']}"
    return created, 201, {"Location": location}


@operation(
    blueprint,
    "GET",
    _TEMPLATES + "/{template}",
    summary="One account template",
    tag="accounts",
    responses={200: TEMPLATE},
)
async def get_template(who: Principal, organisation: str, template: str) -> dict[str, Any]:
    return await domain.get_template(_store(), who, organisation, template)


@operation(
    blueprint,
    "PATCH",
    _TEMPLATES + "/{template}",
    summary="Change an account template (accounts made from it keep their values)",
    tag="accounts",
    body=obj(_TEMPLATE_VALUES),
    example={"description": "First-line support"},
    responses={200: TEMPLATE},
)
async def update_template(
    who: Principal, organisation: str, template: str, body: dict[str, Any]
) -> dict[str, Any]:
    return await domain.update_template(_store(), who, organisation, template, body)


@operation(
    blueprint,
    "DELETE",
    _TEMPLATES + "/{template}",
    summary="Remove an account template no account uses",
    tag="accounts",
    responses={204: None},
)
async def remove_template(who: Principal, organisation: str, template: str) -> tuple[str, int]:
    await domain.remove_template(_store(), who, organisation, template)
    return "", 204


# --------------------------------------------------------------------------- name policy


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/name-policy",
    summary="The rules login ids follow, with their text for users",
    tag="accounts",
    responses={200: NAME_POLICY},
)
async def get_name_policy(who: Principal, organisation: str) -> dict[str, Any]:
    return await domain.get_name_policy(_store(), who, organisation)


@operation(
    blueprint,
    "PUT",
    "/organisations/{organisation}/name-policy",
    summary="Set the rules for new login ids (needs the configuration right)",
    tag="accounts",
    body=obj(_POLICY_MEMBERS, "min_length", "max_length", "allowed_characters"),
    example={
        "min_length": 3,
        "max_length": 32,
        "allowed_characters": "a-z0-9._-",
        "forbidden_words": ["admin", "root"],
    },
    responses={200: NAME_POLICY},
)
async def set_name_policy(
    who: Principal, organisation: str, body: dict[str, Any]
) -> dict[str, Any]:
    policy = domain.NamePolicy(
        body["min_length"],
        body["max_length"],
        body["allowed_characters"],
        tuple(body.get("forbidden_words", ())),
    )
    return await domain.set_name_policy(_store(), who, organisation, policy)


# --------------------------------------------------------------------------- vendors


@operation(
    blueprint,
    "GET",
    "/vendors",
    summary="Vendor (master) admins (supervisor only)",
    tag="vendors",
    listing=domain.VENDOR_LIST,
    responses={200: page_of(VENDOR)},
)
async def list_vendors(who: Principal, query: ListQuery) -> dict[str, Any]:
    return (await domain.list_vendors(_store(), who, query)).as_json()


@operation(
    blueprint,
    "POST",
    "/vendors",
    summary="Create a vendor admin (supervisor only)",
    description="A vendor admin signs in without an organisation and looks after the "
    "organisations it creates. Without password, a one-time password is answered once.",
    tag="vendors",
    body=obj(
        {
            "login": _LOGIN,
            "display_name": _DISPLAY_NAME,
            "email": _EMAIL,
            "password": _PASSWORD,
        },
        "login",
    ),
    example={"login": "reseller", "display_name": "Reseller Ltd", "email": "ops@reseller.example"},
    responses={201: VENDOR_WITH_PASSWORD},
)
async def create_vendor(
    who: Principal, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    created = await domain.create_vendor(_store(), who, domain.NewVendor(**body))
    return created, 201, {"Location": f"/api/v1/vendors/{created['id']}"}


@operation(
    blueprint,
    "GET",
    "/vendors/{vendor}",
    summary="One vendor admin (supervisor only)",
    tag="vendors",
    responses={200: VENDOR},
)
async def get_vendor(who: Principal, vendor: str) -> dict[str, Any]:
    return await domain.get_vendor(_store(), who, vendor)


@operation(
    blueprint,
    "PATCH",
    "/vendors/{vendor}",
    summary="Change a vendor admin; active=false ends its sessions (supervisor only)",
    tag="vendors",
    body=obj({"display_name": _DISPLAY_NAME, "email": _EMAIL, "active": boolean()}),
    example={"display_name": "Reseller Limited"},
    responses={200: VENDOR},
)
async def update_vendor(who: Principal, vendor: str, body: dict[str, Any]) -> dict[str, Any]:
    return await domain.update_vendor(_store(), who, vendor, body)


@operation(
    blueprint,
    "DELETE",
    "/vendors/{vendor}",
    summary="Remove a vendor admin; its organisations stay, with the supervisor",
    tag="vendors",
    responses={204: None},
)
async def remove_vendor(who: Principal, vendor: str) -> tuple[str, int]:
    await domain.remove_vendor(_store(), who, vendor)
    return "", 204
