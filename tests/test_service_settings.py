"""Configuration → Services: defaults, validation, and what an organisation's devices get."""

from __future__ import annotations

import json

import pytest

from engine.config.services import (
    SERVICES,
    OrganisationSettings,
    SettingsError,
    SourcedValue,
    SystemSettings,
    apply_organisation_change,
    apply_system_change,
    effective_settings,
    effective_with_sources,
    system_defaults,
    validate_values,
)

PUBLIC_URL = "https://emm.example.com/"
BASE = "https://emm.example.com"


@pytest.fixture
def system() -> SystemSettings:
    return system_defaults(PUBLIC_URL, xmpp_server="xmpp.example.com:5222")


def org_with_mdm_overrides(*, use_system_wide: bool) -> OrganisationSettings:
    return apply_organisation_change(
        OrganisationSettings(),
        "apple_mdm",
        use_system_wide=use_system_wide,
        overrides={"connection_interval": 15, "apns_certificate": "cert-42"},
    )


# --------------------------------------------------------------------------- the table


def test_every_service_has_a_title_a_description_and_a_service_url() -> None:
    assert list(SERVICES) == [
        "oma_dm", "oma_ds", "wsdm", "eas", "apple_mdm",
        "microsoft_edm", "xmpp", "web_ui", "rest_api",
    ]  # fmt: skip
    assert SERVICES["eas"].title == "Exchange ActiveSync"
    for spec in SERVICES.values():
        assert spec.title and spec.description
        assert spec.fields[0].name == "service_url"
        assert json.dumps(spec.describe())  # the UI and the API are generated from this


def test_portals_and_push_have_no_connection_interval() -> None:
    for name in ("web_ui", "rest_api", "xmpp"):
        with pytest.raises(SettingsError):
            SERVICES[name].field("connection_interval")
    assert SERVICES["wsdm"].field("connection_interval").maximum == 10080


# --------------------------------------------------------------------------- defaults


def test_defaults_derive_from_the_public_url(system: SystemSettings) -> None:
    values = effective_settings(system, None)
    assert values["oma_dm"]["service_url"] == f"{BASE}/omadm"
    assert values["oma_ds"]["service_url"] == f"{BASE}/omads"
    assert values["eas"]["service_url"] == f"{BASE}/Microsoft-Server-ActiveSync"
    assert values["apple_mdm"]["service_url"] == f"{BASE}/mdm/server"
    assert values["apple_mdm"]["check_in_url"] == f"{BASE}/mdm/checkin"
    assert values["microsoft_edm"]["service_url"] == f"{BASE}/EnrollmentServer/Discovery.svc"
    assert values["web_ui"]["service_url"] == f"{BASE}/"
    assert values["rest_api"]["service_url"] == f"{BASE}/api/v1"
    assert values["wsdm"]["service_url"] == f"{BASE}/api/v1"
    assert values["xmpp"]["service_url"] == "xmpp.example.com:5222"
    assert values["wsdm"]["connection_interval"] == 60
    assert values["apple_mdm"]["apns_certificate"] is None
    assert values["apple_mdm"]["scheduled_notifications"] is False
    assert values["apple_mdm"]["notification_interval"] == 60


def test_xmpp_defaults_to_off_without_a_configured_server() -> None:
    values = effective_settings(system_defaults("http://10.0.0.1:8080"), None)
    assert values["xmpp"]["service_url"] is None
    assert values["oma_dm"]["service_url"] == "http://10.0.0.1:8080/omadm"


def test_a_bad_public_url_is_refused() -> None:
    with pytest.raises(SettingsError, match="public_url"):
        system_defaults("emm.example.com")


def test_wsdm_follows_the_rest_api_url(system: SystemSettings) -> None:
    moved = apply_system_change(system, "rest_api", {"service_url": "https://api.example.com/v1"})
    assert effective_settings(moved, None)["wsdm"]["service_url"] == "https://api.example.com/v1"
    with pytest.raises(SettingsError) as info:
        validate_values("wsdm", {"service_url": "https://other.example.com/"})
    assert (info.value.service, info.value.field) == ("wsdm", "service_url")
    assert "rest_api.service_url" in info.value.problem


# --------------------------------------------------------------------------- validation


def test_valid_values_come_back_normalised() -> None:
    assert validate_values(
        "apple_mdm",
        {
            "service_url": "HTTPS://MDM.Example.com/mdm/",
            "scheduled_notifications": True,
            "notification_interval": 240,
            "apns_certificate": None,
        },
    ) == {
        "service_url": "https://mdm.example.com/mdm/",
        "scheduled_notifications": True,
        "notification_interval": 240,
        "apns_certificate": None,
    }


@pytest.mark.parametrize(
    ("server", "normalised"),
    [
        ("push.example.com", "push.example.com:5222"),
        ("xmpp:Push.Example.com", "push.example.com:5222"),
        ("push.example.com:5223", "push.example.com:5223"),
        ("[::1]", "[::1]:5222"),
        ("[::1]:5269", "[::1]:5269"),
        (None, None),
    ],
)
def test_xmpp_server_forms(server: str | None, normalised: str | None) -> None:
    assert validate_values("xmpp", {"service_url": server}) == {"service_url": normalised}


@pytest.mark.parametrize(
    ("service", "values", "field", "problem"),
    [
        ("oma_dm", {"connection_interval": 0}, "connection_interval", "out of range (1..10080"),
        ("oma_dm", {"connection_interval": 10081}, "connection_interval", "out of range"),
        ("oma_dm", {"connection_interval": "60"}, "connection_interval", "expected integer"),
        ("oma_dm", {"connection_interval": 60.0}, "connection_interval", "got number"),
        ("oma_dm", {"connection_interval": True}, "connection_interval", "got boolean"),
        ("oma_dm", {"connection_interval": None}, "connection_interval", "required"),
        ("eas", {"service_url": "ftp://mail.example.com/"}, "service_url", "http"),
        ("eas", {"service_url": "/relative"}, "service_url", "http"),
        ("eas", {"service_url": "https://x.example/?q=1"}, "service_url", "query"),
        ("apple_mdm", {"scheduled_notifications": 1}, "scheduled_notifications",
         "expected boolean"),
        ("apple_mdm", {"notification_interval": 45}, "notification_interval", "not one of"),
        ("apple_mdm", {"apns_certificate": "has space"}, "apns_certificate", "certificate id"),
        ("apple_mdm", {"check_in_url": "mdm/checkin"}, "check_in_url", "http"),
        ("xmpp", {"service_url": "xmpp:user@push.example.com"}, "service_url", "xmpp:host"),
        ("xmpp", {"service_url": "push.example.com:0"}, "service_url", "out of range"),
        ("web_ui", {"service_url": 5}, "service_url", "expected string"),
        ("web_ui", {"connection_interval": 60}, "connection_interval", "unknown field"),
        ("oma_dm", {"colour": "blue"}, "colour", "unknown field"),
    ],
)  # fmt: skip
def test_validation_errors_name_service_and_field(
    service: str, values: dict[str, object], field: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as info:
        validate_values(service, values)
    assert info.value.service == service
    assert info.value.field == field
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{service}.{field}: ")


def test_unknown_service_is_refused() -> None:
    with pytest.raises(SettingsError) as info:
        validate_values("imap", {"service_url": "https://x.example/"})
    assert info.value.service == "imap"
    assert "unknown service" in str(info.value)
    with pytest.raises(SettingsError, match="unknown service"):
        apply_organisation_change(OrganisationSettings(), "imap", use_system_wide=False)


def test_a_failed_change_leaves_the_settings_as_they_were(system: SystemSettings) -> None:
    with pytest.raises(SettingsError):
        apply_system_change(system, "oma_dm", {"service_url": "https://a.example/", "x": 1})
    assert effective_settings(system, None)["oma_dm"]["service_url"] == f"{BASE}/omadm"


# --------------------------------------------------------------------------- effective settings


def test_switch_on_means_system_values_even_with_overrides_stored(system: SystemSettings) -> None:
    org = org_with_mdm_overrides(use_system_wide=True)
    assert org.for_service("apple_mdm").overrides["connection_interval"] == 15  # kept
    assert effective_settings(system, org) == effective_settings(system, None)


def test_switch_off_overrides_only_the_overridden_fields(system: SystemSettings) -> None:
    org = org_with_mdm_overrides(use_system_wide=False)
    mdm = effective_settings(system, org)["apple_mdm"]
    assert mdm["connection_interval"] == 15
    assert mdm["apns_certificate"] == "cert-42"
    assert mdm["service_url"] == f"{BASE}/mdm/server"

    # Later system-wide changes reach the fields the organisation did not override...
    later = apply_system_change(
        system, "apple_mdm", {"service_url": "https://new.example/mdm", "connection_interval": 5}
    )
    mdm = effective_settings(later, org)["apple_mdm"]
    assert mdm["service_url"] == "https://new.example/mdm"
    # ...but not the ones it did.
    assert mdm["connection_interval"] == 15
    # Other services of the same organisation are untouched by its MDM overrides.
    assert effective_settings(later, org)["oma_dm"] == effective_settings(later, None)["oma_dm"]


def test_sources_are_reported_per_value(system: SystemSettings) -> None:
    org = org_with_mdm_overrides(use_system_wide=False)
    org = apply_organisation_change(
        org,
        "rest_api",
        use_system_wide=False,
        overrides={"service_url": "https://api.acme.example/"},
    )
    sourced = effective_with_sources(system, org)
    assert sourced["apple_mdm"]["connection_interval"] == SourcedValue(15, "organisation")
    assert sourced["apple_mdm"]["service_url"] == SourcedValue(f"{BASE}/mdm/server", "system")
    # A derived value reports where the value it follows came from.
    api = SourcedValue("https://api.acme.example/", "organisation")
    assert sourced["wsdm"]["service_url"] == api
    assert sourced["wsdm"]["connection_interval"].source == "system"
    switched_on = apply_organisation_change(org, "apple_mdm", use_system_wide=True)
    on = effective_with_sources(system, switched_on)["apple_mdm"]
    assert all(value.source == "system" for value in on.values())


def test_clearing_an_override_makes_the_field_follow_the_system_again(
    system: SystemSettings,
) -> None:
    org = org_with_mdm_overrides(use_system_wide=False)
    org = apply_organisation_change(org, "apple_mdm", clear=["connection_interval"])
    entry = org.for_service("apple_mdm")
    assert entry.use_system_wide is False  # None left the switch alone
    assert dict(entry.overrides) == {"apns_certificate": "cert-42"}
    assert effective_settings(system, org)["apple_mdm"]["connection_interval"] == 60
    with pytest.raises(SettingsError, match="both set and cleared"):
        apply_organisation_change(
            org, "apple_mdm", overrides={"apns_certificate": "c2"}, clear=["apns_certificate"]
        )
    with pytest.raises(SettingsError, match="unknown field"):
        apply_organisation_change(org, "apple_mdm", clear=["colour"])


def test_values_are_immutable(system: SystemSettings) -> None:
    org = org_with_mdm_overrides(use_system_wide=False)
    with pytest.raises(TypeError):
        system.services["oma_dm"]["connection_interval"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        org.for_service("apple_mdm").overrides["connection_interval"] = 1  # type: ignore[index]
    changed = apply_system_change(system, "oma_dm", {"connection_interval": 1})
    assert system.values("oma_dm")["connection_interval"] == 60
    assert changed.values("oma_dm")["connection_interval"] == 1


# --------------------------------------------------------------------------- JSON


def test_system_settings_json_round_trip(system: SystemSettings) -> None:
    changed = apply_system_change(system, "apple_mdm", {"scheduled_notifications": True})
    data = json.loads(json.dumps(changed.to_json()))
    assert data["version"] == 1
    assert "service_url" not in data["services"]["wsdm"]  # derived, never stored
    assert SystemSettings.from_json(data, public_url="https://elsewhere.example") == changed


def test_organisation_settings_json_round_trip() -> None:
    org = org_with_mdm_overrides(use_system_wide=False)
    data = json.loads(json.dumps(org.to_json()))
    assert data["services"]["apple_mdm"] == {
        "use_system_wide": False,
        "overrides": {"connection_interval": 15, "apns_certificate": "cert-42"},
    }
    back = OrganisationSettings.from_json(data)
    assert back.to_json() == org.to_json()
    assert back.for_service("apple_mdm") == org.for_service("apple_mdm")


def test_missing_services_and_fields_take_defaults_from_json() -> None:
    data = {"version": 1, "services": {"oma_dm": {"connection_interval": 5}}}
    system = SystemSettings.from_json(data, public_url=PUBLIC_URL)
    values = effective_settings(system, None)
    assert values["oma_dm"] == {"service_url": f"{BASE}/omadm", "connection_interval": 5}
    assert values["eas"]["service_url"] == f"{BASE}/Microsoft-Server-ActiveSync"
    org = OrganisationSettings.from_json({"version": 1, "services": {}})
    assert org.for_service("eas").use_system_wide is True


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"version": 2, "services": {}}, "unsupported settings version 2"),
        ([], "expected an object"),
        ({"version": 1, "services": {"imap": {}}}, "imap: unknown service"),
        ({"version": 1, "services": {"oma_dm": {"colour": 1}}}, "oma_dm.colour: unknown field"),
        ({"version": 1, "services": {"oma_dm": {"connection_interval": -1}}},
         "oma_dm.connection_interval: -1 is out of range"),
    ],
)  # fmt: skip
def test_bad_system_json_is_refused(data: object, match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        SystemSettings.from_json(data, public_url=PUBLIC_URL)


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"use_system_wide": "no"}, "apple_mdm.use_system_wide: expected boolean"),
        ({"overrides": {"notification_interval": 7}}, "apple_mdm.notification_interval"),
        ({"inherit": True}, "apple_mdm: unknown keys: inherit"),
    ],
)
def test_bad_organisation_json_is_refused(entry: dict[str, object], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        OrganisationSettings.from_json({"version": 1, "services": {"apple_mdm": entry}})
