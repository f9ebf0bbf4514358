"""The bridge's `novu-signature` check: what passes, what fails and with which code."""

from __future__ import annotations

import hmac
import json
import logging
import time

import pytest

from api.bridge import signature as signature_module
from api.bridge.errors import BridgeError
from api.bridge.signature import compute_signature, parse_signature, sign, verify_signature
from api.routes import novu_bridge
from shared.settings import get_settings
from tests.api.test_novu_bridge import BRIDGE, compact, done, event, secret
from tests.conftest import signup_payload

DISCOVER = {"action": "discover"}
EXECUTE = {"action": "execute", "workflowId": "user-signup", "stepId": "email"}


def now_ms() -> int:
    return int(time.time() * 1000)


def post(client, body: bytes, signature: str | None, header: str = "novu-signature"):
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers[header] = signature
    return client.post(BRIDGE, params=EXECUTE, content=body, headers=headers)


def get(client, signature: str | None, header: str = "novu-signature"):
    headers = {header: signature} if signature is not None else {}
    return client.get(BRIDGE, params=DISCOVER, headers=headers)


def assert_401(response, code: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code
    assert set(response.json()) == {"message", "code"}


@pytest.fixture()
def body() -> bytes:
    return compact(event(signup_payload("sig")))


def test_valid_signature_passes_for_get_and_post(client, body):
    assert get(client, sign(secret())).status_code == 200
    response = post(client, body, sign(secret(), body))
    assert response.status_code == 200, response.text


def test_get_is_signed_over_an_empty_object(client):
    stamp = now_ms()
    over_empty = f"t={stamp},v1={compute_signature(secret(), stamp, b'{}')}"
    over_nothing = f"t={stamp},v1={compute_signature(secret(), stamp, b'')}"
    assert get(client, over_empty).status_code == 200
    assert_401(get(client, over_nothing), "SignatureMismatchError")


def test_missing_header_is_signature_not_found(client, body):
    assert_401(get(client, None), "SignatureNotFoundError")
    assert_401(post(client, body, None), "SignatureNotFoundError")


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "t=1700000000000",
        "v1=abcdef",
        "t=,v1=abcdef",
        "t=soon,v1=abcdef",
        "t=1.7e12,v1=abcdef",
        "t=-5,v1=abcdef",
        "t=" + "9" * 40 + ",v1=abcdef",
        "ts=1700000000000,sig=abcdef",
    ],
)
def test_malformed_header_is_signature_invalid(client, header):
    assert_401(get(client, header), "SignatureInvalidError")


def test_timestamp_six_minutes_old_is_signature_expired(client, body):
    stale = now_ms() - 6 * 60 * 1000
    assert_401(
        post(client, body, sign(secret(), body, timestamp_ms=stale)), "SignatureExpiredError"
    )
    future = now_ms() + 6 * 60 * 1000
    assert_401(get(client, sign(secret(), timestamp_ms=future)), "SignatureExpiredError")


def test_timestamp_four_minutes_old_still_passes(client, body):
    recent = now_ms() - 4 * 60 * 1000
    assert post(client, body, sign(secret(), body, timestamp_ms=recent)).status_code == 200


def test_body_altered_by_one_byte_is_signature_mismatch(client, body):
    signature = sign(secret(), body)
    altered = body.replace(b"sig@example.com", b"sih@example.com")
    assert len(altered) == len(body) and altered != body
    assert_401(post(client, altered, signature), "SignatureMismatchError")


def test_wrong_secret_is_signature_mismatch(client, body):
    assert_401(post(client, body, sign("not-the-secret", body)), "SignatureMismatchError")
    assert_401(get(client, sign("not-the-secret")), "SignatureMismatchError")


def test_signature_over_reserialised_json_with_other_spacing_fails(client, body):
    document = json.loads(body)
    spaced = json.dumps(document).encode()  # ", " and ": " separators
    assert spaced != body and json.loads(spaced) == json.loads(body)
    # Signed over one spelling, sent as the other: the raw bytes decide, both ways.
    assert_401(post(client, body, sign(secret(), spaced)), "SignatureMismatchError")
    assert_401(post(client, spaced, sign(secret(), body)), "SignatureMismatchError")
    # The spaced bytes themselves, signed as sent, are fine.
    assert post(client, spaced, sign(secret(), spaced)).status_code == 200


def test_legacy_header_name_is_accepted(client, body):
    assert get(client, sign(secret()), header="x-novu-signature").status_code == 200
    response = post(client, body, sign(secret(), body), header="x-novu-signature")
    assert response.status_code == 200


def test_health_check_needs_no_signature_even_a_broken_one(client):
    for headers in ({}, {"novu-signature": "garbage"}, {"novu-signature": sign("wrong")}):
        response = client.get(BRIDGE, params={"action": "health-check"}, headers=headers)
        assert response.status_code == 200
        assert response.json()["status"] == "ok"


def test_blanks_around_fields_and_repeated_keys_parse_as_the_framework_does():
    parsed = parse_signature(" t=123 , v1=abc ,v1=def")
    assert (parsed.timestamp, parsed.digest) == ("123", "abc")


def test_digest_comparison_is_constant_time(monkeypatch, body):
    calls = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signature_module.hmac, "compare_digest", spy)
    verify_signature(sign(secret(), body), body, secret())
    with pytest.raises(BridgeError) as failure:
        verify_signature(sign("other", body), body, secret())
    assert failure.value.code == "SignatureMismatchError"
    assert len(calls) == 2


def test_switching_verification_off_accepts_unsigned_calls_and_warns(client, monkeypatch, caplog):
    monkeypatch.setattr(get_settings(), "novu_bridge_verify_signatures", False)
    monkeypatch.setattr(novu_bridge, "_warned_unsigned", False)
    with caplog.at_level(logging.WARNING, logger="api.routes.novu_bridge"):
        assert get(client, None).status_code == 200
        body = compact(event(signup_payload(), state=done("email")))
        assert post(client, body, "garbage").status_code == 200
    warnings = [r for r in caplog.records if "NOVU_BRIDGE_VERIFY_SIGNATURES" in r.getMessage()]
    assert len(warnings) == 1


def test_verification_is_on_by_default():
    from shared.settings import Settings

    assert Settings().novu_bridge_verify_signatures is True
