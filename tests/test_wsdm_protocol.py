"""WSDM's messages on their own (sans-IO): decoding, checking, command mapping, answers."""

from __future__ import annotations

import json

import pytest

from engine.commands import KINDS
from engine.protocols import wsdm
from engine.protocols.wsdm import ProtocolError


def check_in(**members: object) -> dict[str, object]:
    return {"version": 1, "checkin_id": "c-1", "state": {}, **members}


def refused(data: dict[str, object], parse=wsdm.parse_check_in) -> ProtocolError:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        parse(data)
    return info.value


def test_decode_refuses_what_is_not_a_versioned_object() -> None:
    for body, code in (
        (b"{", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"[]", "malformed"),
        (b'"x"', "malformed"),
        (b"{}", "unsupported_version"),
        (b'{"version": true}', "unsupported_version"),
        (b'{"version": 2}', "unsupported_version"),
        (b"{" + b" " * wsdm.MAX_BODY + b"}", "too_large"),
    ):
        with pytest.raises(ProtocolError) as info:
            wsdm.decode(body)
        assert info.value.code == code, body[:20]
    assert wsdm.decode(b'{"version": 1}') == {"version": 1}


def test_a_full_check_in_is_read_member_by_member() -> None:
    message = wsdm.parse_check_in(
        check_in(
            state={
                "os_version": "14",
                "battery_level": 55.5,
                "rooted": True,
                "storage": {"total_bytes": 10, "free_bytes": 5},
                "network": {"type": "cellular", "roaming": True, "operator": "Op"},
                "applications": [{"id": "com.a", "version": "1"}],
            },
            results=[{"command_id": "c1", "status": "failed", "detail": {"why": "busy"}}],
            locations=[
                {"latitude": -33.9, "longitude": 151.2, "recorded_at": "2026-01-01T00:00:00Z"}
            ],
            configuration_hash="abc",
            push_identity=False,
        )
    )
    assert message.inventory["network"] == {"type": "cellular", "roaming": True, "operator": "Op"}
    assert message.inventory["applications"] == [{"id": "com.a", "version": "1"}]
    assert message.results == (wsdm.Result("c1", False, {"why": "busy"}),)
    assert message.locations[0].latitude == -33.9
    assert not message.has_push_identity


@pytest.mark.parametrize(
    ("members", "where"),
    [
        ({"checkin_id": ""}, "checkin_id"),
        ({"checkin_id": "a b"}, "checkin_id"),
        ({"state": []}, "state"),
        ({"state": {"battery_level": -1}}, "state.battery_level"),
        ({"state": {"battery_level": True}}, "state.battery_level"),
        ({"state": {"storage": {"total_bytes": 1}}}, "state.storage.free_bytes"),
        ({"state": {"network": {"roaming": "yes"}}}, "state.network.roaming"),
        ({"state": {"applications": [{"name": "x"}]}}, "state.applications[0].id"),
        ({"state": {"model": "x" * 256}}, "state.model"),
        ({"state": {"colour": "red"}}, "state.colour"),
        ({"locations": [{"latitude": 91, "longitude": 0, "recorded_at": "x"}]}, "latitude"),
        (
            {"locations": [{"latitude": 0, "longitude": 0, "recorded_at": "yesterday"}]},
            "recorded_at",
        ),
        ({"results": [{"command_id": "a", "status": "ok"}]}, "status"),
        ({"results": [{"command_id": "a", "status": "done"}] * 2}, "twice"),
        ({"extra": 1}, "extra"),
    ],
)
def test_wrong_members_are_refused_by_name(members: dict[str, object], where: str) -> None:
    error = refused(check_in(**members))
    assert error.code == "malformed" and error.status == 400
    assert where in str(error)


def test_enrolment_needs_a_code_and_a_known_platform() -> None:
    good = {"version": 1, "code": "ABCD-EFGH-JKLM", "device": {"platform": "android"}}
    assert wsdm.parse_enrolment(good).code == "ABCD-EFGH-JKLM"
    assert "device.platform" in str(
        refused(good | {"device": {"platform": "palm"}}, wsdm.parse_enrolment)
    )
    assert "code" in str(
        refused({"version": 1, "device": {"platform": "ios"}}, wsdm.parse_enrolment)
    )


def test_every_generic_command_kind_maps_to_a_wsdm_command() -> None:
    assert set(wsdm.COMMAND_TYPES) == {kind.value for kind in KINDS}
    track = wsdm.wsdm_command(
        {
            "id": "c1",
            "kind": "track",
            "parameters": {"duration_minutes": 60, "interval_minutes": 5},
        }
    )
    assert track == {
        "command_id": "c1",
        "type": "TrackLocation",
        "parameters": {"duration_seconds": 3600, "interval_seconds": 300},
    }


def test_configuration_hash_changes_with_the_configuration() -> None:
    values = {
        "organisation_id": "o",
        "organisation_code": "acme",
        "service_url": "https://x/api/v1",
        "connection_interval_minutes": 60,
        "xmpp_server": None,
    }
    first = wsdm.configuration(**values)  # type: ignore[arg-type]
    assert first["connection_interval_seconds"] == 3600
    assert wsdm.configuration(**values)["hash"] == first["hash"]  # type: ignore[arg-type]
    changed = wsdm.configuration(**values | {"connection_interval_minutes": 15})  # type: ignore[arg-type]
    assert changed["hash"] != first["hash"]


def test_errors_and_answers_carry_the_version() -> None:
    body = json.loads(wsdm.error_body(ProtocolError("busy", "later", 503)))
    assert body == {"version": 1, "error": {"code": "busy", "message": "later"}}
    assert json.loads(wsdm.encode({"commands": []})) == {"version": 1, "commands": []}


def test_a_body_nested_too_deeply_is_malformed_not_a_crash() -> None:
    for body in (b"[" * 100_000, b'{"version": 1, "state": ' + b'{"a": ' * 50_000 + b"}"):
        with pytest.raises(ProtocolError) as info:
            wsdm.decode(body)
        assert info.value.code == "malformed" and info.value.status == 400


def test_an_enrolment_id_is_optional_and_must_be_hard_to_guess() -> None:
    base = {"version": 1, "code": "ABCD-EFGH-JKLM", "device": {"platform": "android"}}
    assert wsdm.parse_enrolment(dict(base)).enrolment_id is None
    nonce = "3f2b9c1e-7a4d-4e0b-9a61-5d2c8e7f1a90"
    assert wsdm.parse_enrolment(base | {"enrolment_id": nonce}).enrolment_id == nonce
    for bad in ("short", "x" * 65, "has spaces in it, too many", 42):
        assert refused(base | {"enrolment_id": bad}, wsdm.parse_enrolment).code == "malformed"
