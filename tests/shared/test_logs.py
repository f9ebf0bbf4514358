"""The JSON line formatter (shared/logs.py): a record's message, `extra=` fields, context and
request id on one JSON object; secrets redacted; exceptions as text; values JSON cannot hold
written as their repr, never a failed line."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _root_json() -> Iterator[io.StringIO]:
    """The root logger as `logs.configure` leaves it (one JSON LineHandler), into a buffer.
    Entered in the test itself: pytest adds its own handlers to the root for each phase."""
    stream = io.StringIO()
    handler = logs.LineHandler(stream)
    handler.setFormatter(
        logs.JsonLines([structlog.contextvars.merge_contextvars, logs.add_request_id, logs.redact])
    )
    handler.addFilter(logs.QuietMaintenance())
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
        logs.clear()


def test_info_makes_the_line_logging_makes_without_a_record(monkeypatch):
    logger = logging.getLogger("tests.fast_lines")
    fields = {"notification_id": 7, "workflow_id": 'a "quoted" key', "replayed": False}
    logs.bind(enterprise_id="e-1")
    token = logs.REQUEST_ID.set("req-9")
    records: list[logging.LogRecord] = []
    make_record = logging.getLogRecordFactory()

    def counting(*args, **kwargs):
        records.append(make_record(*args, **kwargs))
        return records[-1]

    monkeypatch.setattr(logging, "_logRecordFactory", counting)
    try:
        with _root_json() as stream:
            logs.info(logger, "notification accepted", dict(fields))
            assert records == []  # the fast way: no LogRecord
            logger.info("notification accepted", extra=dict(fields))
            assert len(records) == 1
    finally:
        logs.REQUEST_ID.reset(token)
    fast, logged = _written(stream)
    assert list(fast) == list(logged)  # the same fields in the same order
    assert {**fast, "timestamp": None} == {**logged, "timestamp": None}
    assert fast["workflow_id"] == 'a "quoted" key' and fast["request_id"] == "req-9"


def test_info_goes_through_logging_when_another_handler_listens():
    listened: list[logging.LogRecord] = []

    class Listening(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            listened.append(record)

    logger = logging.getLogger("tests.fast_lines")
    with _root_json() as stream:
        logging.getLogger().addHandler(Listening())
        logs.info(logger, "notification accepted", {"notification_id": 8})
        logger.setLevel(logging.WARNING)
        try:
            logs.info(logger, "not at this level", {"notification_id": 9})
        finally:
            logger.setLevel(logging.NOTSET)
    assert [(r.getMessage(), r.notification_id) for r in listened] == [  # type: ignore[attr-defined]
        ("notification accepted", 8)
    ]
    assert [line["notification_id"] for line in _written(stream)] == [8]


def test_an_integer_over_64_bits_is_written_exactly(lines):
    logger, stream = lines
    logger.info("big", extra={"count": 2**70, "ratio": 0.5})
    [line] = _written(stream)
    assert line["count"] == 2**70 and line["ratio"] == 0.5
