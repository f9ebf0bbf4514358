"""The JSON line formatter (shared/logs.py): a record's message, `extra=` fields, context and
request id on one JSON object; secrets redacted; exceptions as text; values JSON cannot hold
written as their repr, never a failed line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from shared import logs


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    context = [structlog.contextvars.merge_contextvars, logs.add_request_id, logs.redact]
    handler.setFormatter(logs.JsonLines(context))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logs.clear()


def _written(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_holds_message_extras_context_and_request_id(lines):
    logger, stream = lines
    logs.bind(enterprise_id="e-1", transaction_id=None)
    token = logs.REQUEST_ID.set("req-7")
    try:
        logger.warning("batch of %d", 3, extra={"notification_id": 42, "replayed": False})
    finally:
        logs.REQUEST_ID.reset(token)
    [line] = _written(stream)
    assert line == {
        "event": "batch of 3",
        "notification_id": 42,
        "replayed": False,
        "level": "warning",
        "logger": "tests.logs",
        "enterprise_id": "e-1",
        "request_id": "req-7",
    }


def test_secrets_are_redacted_and_odd_values_still_make_a_line(lines):
    logger, stream = lines
    logger.info("hello", extra={"payload": {"email": "a@b"}, "Api_Key": "xnk_1", "when": object})
    [line] = _written(stream)
    assert line["payload"] == "[redacted]" and line["Api_Key"] == "[redacted]"
    assert line["when"] == repr(object)


def test_an_exception_is_on_its_line_as_text(lines):
    logger, stream = lines
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    [line] = _written(stream)
    assert line["level"] == "error" and line["event"] == "failed"
    assert line["exception"].startswith("Traceback") and "ValueError: boom" in line["exception"]
