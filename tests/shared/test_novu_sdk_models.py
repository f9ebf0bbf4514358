"""Our Novu bodies against the official novu-py SDK's models (a test-only dependency).

A body round-trips when the SDK parses it into its request model and serialises
it back, the way the SDK itself puts it on the wire, with the same keys and
values: nothing we send is unknown to Novu's own client.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from shared.novu import Subscriber, Tenant, Topic, TriggerEvent, TriggerResult, TriggerStatus
from shared.novu.client import build_bulk_trigger_request, build_trigger_request

novu_models = pytest.importorskip("novu_py.models")
novu_utils = pytest.importorskip("novu_py.utils")

SdkTrigger = novu_models.TriggerEventRequestDto
SdkBulk = novu_models.BulkTriggerEventDto

FULL_SUBSCRIBER: dict[str, Any] = {
    "subscriberId": "user-1",
    "email": "ada@example.com",
    "phone": "+441234567890",
    "firstName": "Ada",
    "lastName": "Lovelace",
    "locale": "en-GB",
    "timezone": "Europe/London",
    "avatar": "https://example.com/ada.png",
    "data": {"plan": "pro", "tags": ["a", "b"], "manager": None},
}


def make_event(**fields: Any) -> TriggerEvent:
    values: dict[str, Any] = {
        "name": "order-shipped",
        "to": "user-1",
        "payload": {"orderId": 42, "items": [{"sku": "X1", "qty": 2}], "note": None},
        "transactionId": "6f1c1f0e-4d8e-4a55-9a37-1f3f5a1c2b00",
    }
    values.update(fields)
    return TriggerEvent.model_validate(values)


def sdk_wire(model_type: type[BaseModel], body: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Parse `body` with an SDK model; return the model and the JSON the SDK would send."""
    model = model_type.model_validate(body)
    wire: dict[str, Any] = json.loads(novu_utils.marshal_json(model, model_type))
    return model, wire


def wire_names(model_type: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model_type.model_fields.items()}


CASES: dict[str, dict[str, Any]] = {
    "subscriber-id": {"to": "user-1"},
    "subscriber-object": {"to": FULL_SUBSCRIBER},
    "topic": {"to": {"type": "Topic", "topicKey": "ops-team"}},
    "topic-with-exclusions": {"to": {"type": "Topic", "topicKey": "ops", "exclude": ["user-9"]}},
    "list": {
        "to": [
            "user-1",
            {"subscriberId": "user-2", "email": "bob@example.com"},
            {"type": "Topic", "topicKey": "ops-team"},
        ]
    },
    "overrides": {
        "overrides": {
            "steps": {"send-email": {"providers": {"sendgrid": {"ipPoolName": "transactional"}}}},
            "providers": {"twilio": {"from": "+15550000000"}},
            "channels": {"email": {"layoutId": "plain"}},
            "email": {"from": "ops@example.com", "replyTo": "help@example.com"},
            "severity": "high",
        }
    },
    "actor-id": {"actor": "admin-1"},
    "actor-object": {"actor": {"subscriberId": "admin-1", "firstName": "Grace"}},
    "tenant-id": {"tenant": "acme"},
    "tenant-object": {"tenant": {"identifier": "acme", "name": "Acme Ltd"}},
}


@pytest.mark.parametrize("fields", CASES.values(), ids=CASES.keys())
def test_trigger_body_round_trips_through_the_sdk_model(fields: dict[str, Any]) -> None:
    ours = make_event(**fields).to_body()

    _, wire = sdk_wire(SdkTrigger, ours)

    assert wire == ours
    assert wire["transactionId"] == "6f1c1f0e-4d8e-4a55-9a37-1f3f5a1c2b00"


def test_sdk_reads_each_recipient_kind_as_the_right_type() -> None:
    event = make_event(to=["user-1", FULL_SUBSCRIBER, {"type": "Topic", "topicKey": "ops"}])

    model, _ = sdk_wire(SdkTrigger, event.to_body())

    plain, subscriber, topic = model.to
    assert plain == "user-1"
    assert isinstance(subscriber, novu_models.SubscriberPayloadDto)
    assert subscriber.subscriber_id == "user-1"
    assert subscriber.first_name == "Ada"
    assert subscriber.data == FULL_SUBSCRIBER["data"]
    assert isinstance(topic, novu_models.TopicPayloadDto)
    assert topic.topic_key == "ops"
    assert topic.type == novu_models.TriggerRecipientsTypeEnum.TOPIC
    assert model.workflow_id == "order-shipped"
    assert model.transaction_id == event.transaction_id


def test_the_bytes_we_send_parse_into_the_sdk_model_unchanged() -> None:
    event = make_event(to=FULL_SUBSCRIBER, overrides={"email": {"from": "ops@example.com"}})
    sent = json.loads(build_trigger_request(event).content or b"")

    _, wire = sdk_wire(SdkTrigger, sent)

    assert wire == sent


def test_bulk_body_round_trips_through_the_sdk_model() -> None:
    events = [
        make_event(transactionId="t-1", to="user-1"),
        make_event(transactionId="t-2", to=FULL_SUBSCRIBER, actor="admin-1"),
        make_event(transactionId="t-3", to={"type": "Topic", "topicKey": "ops"}, tenant="acme"),
    ]
    sent = json.loads(build_bulk_trigger_request(events).content or b"")

    model, wire = sdk_wire(SdkBulk, sent)

    assert wire == sent
    assert [item.transaction_id for item in model.events] == ["t-1", "t-2", "t-3"]


@pytest.mark.parametrize(
    ("ours", "sdk"),
    [
        (TriggerEvent, novu_models.TriggerEventRequestDto),
        (Subscriber, novu_models.SubscriberPayloadDto),
        (Topic, novu_models.TopicPayloadDto),
        (Tenant, novu_models.TenantPayloadDto),
    ],
)
def test_every_field_we_can_send_is_known_to_the_sdk(
    ours: type[BaseModel], sdk: type[BaseModel]
) -> None:
    assert wire_names(ours) <= wire_names(sdk)


def test_unset_fields_are_left_out_not_sent_as_null() -> None:
    body = make_event(to={"subscriberId": "user-1"}).to_body()

    assert set(body) == {"name", "to", "payload", "transactionId"}
    assert body["to"] == {"subscriberId": "user-1"}
    assert body["payload"]["note"] is None  # the caller's own nulls are kept


def test_tenant_data_is_sent_although_the_sdk_model_would_drop_it() -> None:
    # novu-py generates TenantPayloadDto.data as a field-less model, so the SDK loses
    # its contents; Novu's API accepts any object there, so we keep sending it.
    tenant = {"identifier": "acme", "data": {"region": "eu"}}
    ours = make_event(tenant=tenant).to_body()

    _, wire = sdk_wire(SdkTrigger, ours)

    assert ours["tenant"] == tenant
    assert wire["tenant"]["identifier"] == "acme"


def test_sdk_idempotency_header_is_the_one_we_send() -> None:
    field = novu_models.EventsControllerTriggerRequest.model_fields["idempotency_key"]

    assert field.alias is not None
    assert field.alias.lower() == "idempotency-key"


def test_sdk_trigger_response_parses_into_our_result() -> None:
    sdk_result = novu_models.TriggerEventResponseDto(
        acknowledged=True,
        status=novu_models.TriggerEventResponseDtoStatus.INVALID_RECIPIENTS,
        error=["No valid recipients"],
        transaction_id="t-1",
        activity_feed_link="https://dashboard.novu.co/activity",
    )
    data = json.loads(sdk_result.model_dump_json(by_alias=True, exclude_none=True))

    result = TriggerResult.model_validate(data)

    assert result.acknowledged is True
    assert result.status == "invalid_recipients"
    assert result.processed is False
    assert result.transaction_id == "t-1"
    assert result.error == ["No valid recipients"]


def test_our_trigger_statuses_are_the_sdks() -> None:
    sdk_statuses = {status.value for status in novu_models.TriggerEventResponseDtoStatus}

    assert {status.value for status in TriggerStatus} == sdk_statuses


# --- our own validation of what we send ---------------------------------------------------


def test_recipient_list_takes_one_to_one_hundred() -> None:
    assert len(make_event(to=[f"user-{n}" for n in range(100)]).to_body()["to"]) == 100
    with pytest.raises(ValidationError):
        make_event(to=[f"user-{n}" for n in range(101)])
    with pytest.raises(ValidationError):
        make_event(to=[])


def test_snake_case_and_camel_case_both_build_the_same_event() -> None:
    camel = make_event(to={"subscriberId": "u", "firstName": "Ada"})
    snake = TriggerEvent(
        name="order-shipped",
        to=Subscriber(subscriber_id="u", first_name="Ada"),
        payload=camel.payload,
        transaction_id=camel.transaction_id,
    )

    assert snake.to_body() == camel.to_body()
    assert isinstance(camel.to, Subscriber)


@pytest.mark.parametrize(
    "to",
    [
        {"subscriberId": "u", "fristName": "typo"},
        {"type": "Topic"},
        {"type": "Subscriber", "topicKey": "ops"},
        {"subscriberId": ""},
    ],
    ids=["unknown-field", "topic-without-key", "wrong-type", "empty-id"],
)
def test_malformed_recipients_are_refused(to: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make_event(to=to)


def test_transaction_id_is_required() -> None:
    with pytest.raises(ValidationError):
        TriggerEvent.model_validate({"name": "order-shipped", "to": "user-1"})
