"""The trigger bodies intake accepts: the original XNovu's camelCase fields.

A recipient is what Novu's trigger takes in `to`: a subscriberId, a subscriber object or a topic
(docs/architecture.md, "Recipients"). Each is checked as Novu checks it, stricter where Novu's
rule is loose or unknown, so that nothing is accepted that Novu would refuse or drop:
- a subscriberId (and a topicKey) matches Novu's SUBSCRIBER_ID_REGEX, letters, digits and
  `_ : . -`, or an email-like id, with no surrounding spaces (Novu trims; we refuse);
- a subscriber object has Novu's fields only (SubscriberPayloadDto): `email` an address Novu's
  IsEmail accepts (ASCII only here: a dot-atom local part of at most 64 bytes, a host name
  whose top-level domain is letters), `locale` a language[-Script][-REGION] tag (a subset of
  IsLocale), `timezone` an IANA zone name (IsTimeZone), the rest strings; `null` means "not
  given" and is left out of what Novu receives;
- `data` is the tenant's own data: an object, bounded in size and depth, as Novu stores it on
  the subscriber;
- a topic is `{type: "Topic", topicKey, exclude?}`.
A list of bare ids is checked by pydantic's compiled validators alone: the hot path pays for
no Python per recipient.
"""

from __future__ import annotations

import json
import uuid
import zoneinfo
from functools import cache
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

# Novu's SUBSCRIBER_ID_REGEX: its trigger drops (or, depending on the environment, refuses) a
# recipient whose subscriberId or topicKey does not match it.
SUBSCRIBER_ID_PATTERN = r"^(?:[A-Za-z0-9_:.\-]+|\S+@\S+\.\S+)$"
# A language, an optional script and an optional region: every such tag passes Novu's IsLocale.
LOCALE_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?$"
# An address validator.js's isEmail (Novu's IsEmail) accepts, in ASCII: it is a regular
# expression there too, and this one runs in pydantic's compiled checks.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}$"
# Bounds of a subscriber's tenant data: it rides in every event that names the subscriber.
MAX_SUBSCRIBER_DATA_BYTES = 4096
MAX_SUBSCRIBER_DATA_DEPTH = 5

_SUBSCRIBER_ID_RULE = (
    "must be letters, digits and _ : . - only, or an email address (Novu's subscriberId rule)"
)
# The rule as pydantic's compiled checks run it (no Python per value)...
_PatternedId = Annotated[str, Field(min_length=1, max_length=255, pattern=SUBSCRIBER_ID_PATTERN)]


def _clearer(exc: ValidationError) -> ValidationError:
    """The errors with the subscriberId rule said in words instead of its regular expression."""
    errors: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False):
        kind: Any = error["type"]
        if kind == "string_pattern_mismatch":
            kind = PydanticCustomError("subscriber_id", _SUBSCRIBER_ID_RULE)
        errors.append(
            {
                "type": kind,
                "loc": error["loc"],
                "input": error["input"],
                "ctx": error.get("ctx", {}),
            }
        )
    return ValidationError.from_exception_data(exc.title, errors)


def _subscriber_id(value: Any, handler: ValidatorFunctionWrapHandler) -> str:
    try:
        checked: str = handler(value)
    except ValidationError as exc:
        raise _clearer(exc) from None
    return checked


# ...and as a field, its error worded.
SubscriberId = Annotated[_PatternedId, WrapValidator(_subscriber_id)]


def _email(value: Any, handler: ValidatorFunctionWrapHandler) -> str:
    invalid = PydanticCustomError("email", "not a valid email address")
    try:
        checked: str = handler(value)
    except ValidationError as exc:
        if any(error["type"] == "string_pattern_mismatch" for error in exc.errors()):
            raise invalid from None
        raise
    if checked.index("@") > 64:  # the local part's limit, which the expression cannot count
        raise invalid
    return checked


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(value: str) -> str:
    if value not in _zones():
        raise PydanticCustomError("timezone", "not an IANA time zone name (e.g. Europe/Paris)")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether values nest more than `limit` containers deep (walked level by level, so that no
    input can exhaust the stack)."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return True


def _tenant_data(value: dict[str, Any]) -> dict[str, Any]:
    if _deeper_than(value, MAX_SUBSCRIBER_DATA_DEPTH):
        raise PydanticCustomError(
            "data_too_deep",
            "nested deeper than {depth} levels",
            {"depth": MAX_SUBSCRIBER_DATA_DEPTH},
        )
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except UnicodeEncodeError:
        return value  # intake refuses what PostgreSQL cannot store, with its own message
    if size > MAX_SUBSCRIBER_DATA_BYTES:
        raise PydanticCustomError(
            "data_too_large",
            "{size} bytes of JSON, over {limit}",
            {"size": size, "limit": MAX_SUBSCRIBER_DATA_BYTES},
        )
    return value


Name = Annotated[str, Field(max_length=255)]


class SubscriberRecipient(BaseModel):
    """A subscriber given inline: Novu creates it, or updates it with these fields."""

    model_config = ConfigDict(extra="forbid")

    subscriberId: SubscriberId
    email: (
        Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN), WrapValidator(_email)] | None
    ) = None
    phone: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    firstName: Name | None = None
    lastName: Name | None = None
    avatar: Annotated[str, Field(max_length=2048)] | None = None
    locale: Annotated[str, Field(pattern=LOCALE_PATTERN)] | None = None
    timezone: Annotated[str, Field(max_length=64), AfterValidator(_timezone)] | None = None
    data: Annotated[dict[str, Any], AfterValidator(_tenant_data)] | None = None


class TopicRecipient(BaseModel):
    """Every subscriber of a Novu topic, optionally minus some of them."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Topic"]
    topicKey: SubscriberId
    exclude: list[SubscriberId] | None = Field(default=None, max_length=100)


RecipientObject = SubscriberRecipient | TopicRecipient
SUBSCRIBER = TypeAdapter(SubscriberRecipient)
_TOPIC = TypeAdapter(TopicRecipient)
_ID = TypeAdapter(SubscriberId)
_IDS = TypeAdapter(Annotated[list[_PatternedId], Field(min_length=1)])


def _recipient(value: Any, _: ValidatorFunctionWrapHandler) -> str | RecipientObject:
    """One recipient, by its shape: an object naming a topic is a topic, any other object a
    subscriber; errors carry the field inside the recipient (`recipients.2.email`)."""
    if isinstance(value, str):
        return _ID.validate_python(value)
    if isinstance(value, dict):
        if "topicKey" in value or "type" in value:
            return _TOPIC.validate_python(value)
        return SUBSCRIBER.validate_python(value)
    raise PydanticCustomError(
        "recipient_type", "a recipient is a subscriberId, a subscriber object or a topic"
    )


def _recipients(value: Any, handler: ValidatorFunctionWrapHandler) -> list[str | RecipientObject]:
    # Bare ids (the common case) in one compiled pass; any object: each item by its shape.
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        try:
            ids: list[str] = _IDS.validate_python(value)
        except ValidationError as exc:
            raise _clearer(exc) from None
        return cast("list[str | RecipientObject]", ids)
    checked: list[str | RecipientObject] = handler(value)
    return checked


Recipient = Annotated[
    SubscriberId | SubscriberRecipient | TopicRecipient, WrapValidator(_recipient)
]


class TriggerRequest(BaseModel):
    """A notification to trigger: a published workflow of the enterprise, its payload, and
    whom it goes to (`recipients`, or the subscriber the workflow derives from the payload)."""

    model_config = ConfigDict(extra="forbid")

    workflowId: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    payload: dict[str, Any] = Field(default_factory=dict)
    enterpriseId: uuid.UUID | None = None
    subscriberId: SubscriberId | None = None
    recipients: (
        Annotated[list[Recipient], Field(min_length=1), WrapValidator(_recipients)] | None
    ) = None
    notificationId: int | None = Field(default=None, ge=1, le=2**63 - 1)
    scheduledFor: AwareDatetime | None = None
    overrides: dict[str, Any] | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, max_length=20
    )


class BulkTriggerEvent(TriggerRequest):
    """One event of a bulk trigger: a single trigger's body plus its own idempotency key."""

    idempotencyKey: str | None = Field(default=None, min_length=1, max_length=255)


def recipient_key(recipient: str | RecipientObject) -> str:
    """What `ent_notification.recipients` keeps of a recipient: its subscriberId or topicKey."""
    if isinstance(recipient, str):
        return recipient
    if isinstance(recipient, TopicRecipient):
        return recipient.topicKey
    return recipient.subscriberId


def recipient_as_given(recipient: str | RecipientObject) -> str | dict[str, Any]:
    """A recipient as the caller gave it (the fields it set, nulls included)."""
    if isinstance(recipient, str):
        return recipient
    return recipient.model_dump(mode="json", exclude_unset=True)
