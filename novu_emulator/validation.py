"""Novu's checks on trigger bodies, with its messages (class-validator wording).

Field errors have the shape of Novu's 422 `errors` member:
`{"to": {"messages": ["to must contain no more than 100 elements"], "value": [...]}}`.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_PAYLOAD_BYTES = 524_288  # 512 KB, per trigger event (Novu: "Payload Limits").
MAX_RECIPIENTS = 100
MAX_BULK_EVENTS = 100
# Novu's SUBSCRIBER_ID_REGEX, which every subscriberId and topicKey of `to` must match once
# trimmed (apps/api trigger-recipient-validation.ts); Novu sets no length limit.
SUBSCRIBER_ID = re.compile(r"(?:[A-Za-z0-9_:.\-]+|\S+@\S+\.\S+)")
_RECIPIENT_SHAPE = (
    'each recipient must be a subscriberId string, a subscriber object with "subscriberId", '
    'or a topic {"type": "Topic", "topicKey"}'
)

FieldErrors = dict[str, dict[str, Any]]


def json_size(document: Any) -> int:
    """Bytes of the document as compact JSON (what Novu measures against the 512 KB limit)."""
    return len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode())


def payload_too_large_message(size: int, *, index: int | None = None, name: Any = None) -> str:
    """Novu's 413 message, for one trigger or for event `index` of a bulk trigger."""
    tail = (
        f"exceeds maximum allowed size of {MAX_PAYLOAD_BYTES} bytes (512KB). "
        "Note: Attachments are excluded from this limit."
    )
    if index is None:
        return f"Payload size ({size} bytes) {tail}"
    return f'Event at index {index} (workflow: "{name}") has payload size ({size} bytes) {tail}'


def _add(errors: FieldErrors, name: str, message: str, value: Any = None) -> None:
    entry = errors.setdefault(name, {"messages": []})
    entry["messages"].append(message)
    if value is not None:
        entry["value"] = value


def _is_recipient(item: Any) -> bool:
    if isinstance(item, str):
        return bool(item)
    if not isinstance(item, dict):
        return False
    if item.get("type") == "Topic" or "topicKey" in item:
        return isinstance(item.get("topicKey"), str) and bool(item["topicKey"])
    return isinstance(item.get("subscriberId"), str) and bool(item["subscriberId"])


def recipients(to: Any) -> list[Any]:
    """The recipients of `to`, whether it is one recipient or a list of them."""
    return to if isinstance(to, list) else [to]


def _valid_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    trimmed = value.strip()
    return trimmed if SUBSCRIBER_ID.fullmatch(trimmed) else None


def _valid_recipient(item: Any) -> Any:
    """The recipient as Novu keeps it (its id trimmed), or None when Novu's rule refuses it."""
    if isinstance(item, str):
        return _valid_id(item)
    if isinstance(item, dict):
        for key in ("subscriberId", "topicKey"):
            if key in item:
                checked = _valid_id(item[key])
                return None if checked is None else {**item, key: checked}
    return None


def valid_recipients(to: Any) -> tuple[Any, list[Any]]:
    """What Novu keeps of `to` and what it drops: a list loses the recipients whose
    subscriberId or topicKey fails SUBSCRIBER_ID_REGEX; a single such recipient leaves None.
    (Novu drops them unless its dry-run flag is on, where it only logs them: the emulator
    always drops them, the stricter of the two.)"""
    if not isinstance(to, list):
        kept = _valid_recipient(to)
        return kept, [] if kept is not None else [to]
    valid: list[Any] = []
    invalid: list[Any] = []
    for item in to:
        kept = _valid_recipient(item)
        if kept is None:
            invalid.append(item)
        else:
            valid.append(kept)
    return valid, invalid


def trigger_errors(body: Any) -> FieldErrors:
    """What is wrong with one trigger body (empty when it is valid)."""
    errors: FieldErrors = {}
    if not isinstance(body, dict):
        _add(errors, "body", "the request body must be a JSON object")
        return errors
    name = body.get("name")
    if name is None:
        _add(errors, "name", "name should not be null or undefined")
    if not isinstance(name, str):
        _add(errors, "name", "name must be a string", name)
    to = body.get("to")
    if to is None:
        _add(errors, "to", "to should not be null or undefined")
    elif isinstance(to, list) and len(to) > MAX_RECIPIENTS:
        _add(errors, "to", f"to must contain no more than {MAX_RECIPIENTS} elements")
    elif not all(_is_recipient(item) for item in recipients(to)):
        _add(errors, "to", _RECIPIENT_SHAPE, to)
    for field in ("payload", "overrides"):
        if field in body and body[field] is not None and not isinstance(body[field], dict):
            _add(errors, field, f"{field} must be an object", body[field])
    for field in ("transactionId", "bridgeUrl"):
        if field in body and body[field] is not None and not isinstance(body[field], str):
            _add(errors, field, f"{field} must be a string", body[field])
    for field in ("actor", "tenant"):
        value = body.get(field)
        if value is not None and not isinstance(value, str | dict):
            _add(errors, field, f"{field} must be a string or an object", value)
    return errors


def bulk_envelope_errors(body: Any) -> FieldErrors:
    """What is wrong with a bulk body's `events` list itself (its events are checked one by one)."""
    errors: FieldErrors = {}
    if not isinstance(body, dict):
        _add(errors, "body", "the request body must be a JSON object")
        return errors
    events = body.get("events")
    if not isinstance(events, list):
        _add(errors, "events", "events must be an array")
    elif not events:
        _add(errors, "events", "events should not be empty")
    elif len(events) > MAX_BULK_EVENTS:
        _add(errors, "events", f"events must contain no more than {MAX_BULK_EVENTS} elements")
    return errors


def flat_messages(errors: FieldErrors) -> list[str]:
    """Every message of the field errors, in order (a bulk result's `error` list)."""
    return [message for entry in errors.values() for message in entry["messages"]]
