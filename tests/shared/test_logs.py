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


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_logged_inside_one_write_reach_the_stream_in_one_write():
    stream = _CountingStream()
    handler = logs.LineHandler(stream)
    handler.setFormatter(logs.JsonLines([logs.redact]))
    logger = logging.getLogger("tests.logs.one_write")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with logs.one_write():
            for number in range(3):
                logger.info("notification accepted", extra={"notification_id": number})
                with logs.one_write():  # a nested block joins the outer one
                    logger.info("nested", extra={"notification_id": number})
            assert stream.writes == 0  # nothing written before the block ends
        assert stream.writes == 1
        logger.info("outside", extra={"notification_id": 9})
        assert stream.writes == 2  # one write per line again
    finally:
        logger.removeHandler(handler)
    written = _written(stream)
    assert [(line["event"], line["notification_id"]) for line in written] == [
        ("notification accepted", 0),
        ("nested", 0),
        ("notification accepted", 1),
        ("nested", 1),
        ("notification accepted", 2),
        ("nested", 2),
        ("outside", 9),
    ]


def test_a_line_that_cannot_be_written_does_not_raise_into_the_caller(capsys):
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    handler = logs.LineHandler(Broken())
    handler.setFormatter(logs.JsonLines([]))
    logger = logging.getLogger("tests.logs.broken")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with logs.one_write():
            logger.warning("lost")
    finally:
        logger.removeHandler(handler)
    assert "disk full" in capsys.readouterr().err  # reported as logging reports its errors
