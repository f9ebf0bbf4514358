"""Logging for every XNovu process: one line per record, JSON in production
(`LOG_FORMAT=json`, the default) or readable key=value lines (`console`, what `make run` uses),
built with structlog's processors for our own loggers and everyone else's (uvicorn, Celery,
httpx): all of them log through the standard library.

Context travels with the work, in structlog's contextvars, and is on every line logged
within it:
- `request_id`: from the caller's `X-Request-ID` (when it is a plain token of at most 64
  characters) or made per request (api/request_ids.py, in `REQUEST_ID`); answered in
  `X-Request-ID`.
- `enterprise_id`, `notification_id`, `transaction_id`: bound where a line is about one
  notification (`notification_context`), or one enterprise's batch.

Never logged: payloads, recipients' details, keys, secrets. `redact` drops fields of those
names from any line, whoever logged them. Maintenance is quiet: Celery's per-task lines and
beat's "Sending due task" lines for the periodic tasks are DEBUG (`QuietMaintenance`); the
tasks themselves log at INFO when they did something.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import re
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any, cast

import orjson
import structlog

# Fields never written, whoever logs them (matched by name, case-insensitively).
REDACTED_FIELDS = frozenset(
    {"payload", "authorization", "api_key", "apikey", "secret", "password", "token", "overrides"}
)
_MAY_NAME_REDACTED = re.compile("|".join(sorted(REDACTED_FIELDS)))
# Celery's per-task lines of these tasks are DEBUG: they run every second or two.
MAINTENANCE_TASKS = frozenset(
    {
        "xnovu.release_due_notifications",
        "xnovu.reconcile",
        "xnovu.novu_sync",
        "xnovu.dispatch_webhooks",
        "xnovu.purge_finished",
        "xnovu.fire_rules",
    }
)
_CELERY_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


# The request a line belongs to (api/request_ids.py sets it for each request's task). A
# ContextVar of its own rather than structlog's bound context: setting it is one call, where
# clearing and binding structlog's context per request cost the trigger a quarter of its CPU.
REQUEST_ID: ContextVar[str | None] = ContextVar("xnovu_request_id", default=None)


def add_request_id(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Put the current request's id on the line."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop fields that may hold secrets or tenants' data."""
    # One lowercase copy of all the names, searched once for any redacted name: a line without
    # one (nearly every line) costs that, not a lowercase copy of each name.
    try:
        names = "\n".join(event).lower()
    except TypeError:  # a name that is not a string
        names = "\n".join(map(str, event)).lower()
    if _MAY_NAME_REDACTED.search(names):
        for key in [key for key in event if str(key).lower() in REDACTED_FIELDS]:
            event[key] = "[redacted]"
    return event


def _unserialisable(value: Any) -> str:
    """A value JSON cannot hold goes on the line as its repr, as structlog's renderer does."""
    return repr(value)


def render_json(value: Any, **_options: Any) -> str:
    """A line's JSON text (structlog's JSONRenderer calls this as its serializer): orjson's
    compact output, about a tenth of the standard library's cost; what orjson refuses (an
    integer over 64 bits) through the standard library."""
    try:
        return orjson.dumps(value, default=_unserialisable, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, default=_unserialisable, separators=(",", ":"))


class QuietMaintenance(logging.Filter):
    """Celery's "received"/"succeeded" lines and beat's "Sending due task" lines about the
    periodic maintenance tasks go down to DEBUG (and are dropped below it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _about_maintenance(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _about_maintenance(record: logging.LogRecord) -> bool:
    args = record.args
    if record.name in _CELERY_TASK_LOGGERS and isinstance(args, dict):
        return args.get("name") in MAINTENANCE_TASKS
    if record.name == "celery.beat" and isinstance(args, tuple) and len(args) == 2:
        return args[1] in MAINTENANCE_TASKS
    return False


# A LogRecord's own attributes: any other attribute came from `extra=` and goes on the line.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


class JsonLines(logging.Formatter):
    """A record as one JSON object: its message as `event`, its `extra=` fields, `level`,
    `logger`, then structlog's processors (the context, the request id, the timestamp,
    `redact`) and structlog's JSON renderer.

    What structlog's ProcessorFormatter does for records of the standard library, without its
    copy of every record and its second pass: an API process writes a line per accepted
    trigger, and that line took 23.5 µs through ProcessorFormatter, 14.4 µs here
    (docs/performance.md, "With production logging")."""

    def __init__(self, processors: list[Any]) -> None:
        super().__init__()
        self.processors = processors
        self.render = structlog.processors.JSONRenderer(serializer=render_json)

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {"event": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES:
                event[key] = value
        method = record.levelname.lower()
        event["level"] = method
        event["logger"] = record.name
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return self.format_event(method, event)

    def format_event(self, method: str, event: dict[str, Any]) -> str:
        """The line of an event already holding its message, fields, level and logger."""
        for processor in self.processors:
            event = processor(None, method, event)
        return str(self.render(None, method, event))


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose lines, inside `one_write()`, are written together at its end.

    A write to the stream is a system call that lets go of the GIL: an API process's event
    loop that wrote the line of each trigger it accepted handed the GIL to its recorder thread
    and waited to get it back, once per trigger (docs/performance.md, "The line per trigger").
    The recorder logs the lines of a whole batch in one write instead. Nothing is held across
    time: the lines are written when the block ends, before the batch's requests are answered.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if _pending_lines() is None:
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.emit_line(line)

    def emit_line(self, line: str) -> None:
        """Write a formatted line now, or at the end of the thread's `one_write()` block."""
        pending = _pending_lines()
        if pending is None:
            self.write_lines([line])
        else:
            pending.setdefault(self, []).append(line)

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        text = self.terminator.join(lines) + self.terminator
        self.acquire()
        try:
            self.stream.write(text)
            self.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": f"{len(lines)} lines"}))
        finally:
            self.release()


_ONE_WRITE = threading.local()


def info(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """`logger.info(message, extra=fields)`, the same line, made without a LogRecord when the
    record would only reach the JSON LineHandler `configure` installed (no other handler or
    filter on its way): the accepted line of every trigger is made this way, and the record,
    the logging machinery's dispatch and the handler's filter (which passes every line not
    about maintenance) were half of its cost. tests/shared/test_logs.py compares both lines."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _only_json_handler(logger)
    if handler is None:
        logger.info(message, extra=fields)
        return
    formatter = cast("JsonLines", handler.formatter)
    event = {"event": message, **fields, "level": "info", "logger": logger.name}
    try:
        line = formatter.format_event("info", event)
    except Exception:
        handler.handleError(logging.makeLogRecord({"msg": message}))
        return
    handler.emit_line(line)


def _only_json_handler(logger: logging.Logger) -> LineHandler | None:
    """The LineHandler with JSON lines that is the only way out of `logger`, or None."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.parent is None:  # the root
            if len(current.handlers) != 1:
                return None
            [handler] = current.handlers
            if (
                isinstance(handler, LineHandler)
                and isinstance(handler.formatter, JsonLines)
                and handler.level <= logging.INFO
                and all(isinstance(f, QuietMaintenance) for f in handler.filters)
            ):
                return handler
            return None
        if current.handlers or not current.propagate:
            return None
        current = current.parent
    return None


def _pending_lines() -> dict[LineHandler, list[str]] | None:
    pending: dict[LineHandler, list[str]] | None = getattr(_ONE_WRITE, "pending", None)
    return pending


@contextlib.contextmanager
def one_write() -> Iterator[None]:
    """Lines this thread logs inside the block reach each LineHandler's stream in one write,
    when the block ends (a nested block joins the outer one)."""
    if _pending_lines() is not None:
        yield
        return
    pending: dict[LineHandler, list[str]] = {}
    _ONE_WRITE.pending = pending
    try:
        yield
    finally:
        _ONE_WRITE.pending = None
        for handler, lines in pending.items():
            handler.write_lines(lines)


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Send every logger's records through one formatter on stderr (replacing what uvicorn or
    Celery set up): JSON lines, or structlog's console renderer."""
    context: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonLines(context)
    else:
        formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *context,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.dev.ConsoleRenderer(colors=False, sort_keys=False),
            ],
        )
    handler = LineHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(QuietMaintenance())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's and Celery's loggers keep their levels but write through the root's handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # httpx logs every request at INFO: the worker makes thousands a second.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Python's warnings (Celery's, for one, when it runs as root) are lines like any other.
    logging.captureWarnings(True)
    # No line shows the caller's file, thread or process: the Logging HOWTO's "Optimization"
    # settings spare each record looking them up.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def bind(**values: Any) -> None:
    """Add to the context of every later line in this context (None values are left out)."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v is not None})


def clear() -> None:
    """Forget the context (at the start of a request or a task)."""
    structlog.contextvars.clear_contextvars()
