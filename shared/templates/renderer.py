"""TemplateRenderer: an enterprise's templates rendered by their channel's rules, cached.

Variables
    A template renders with `{**defaults, **variables}`. The defaults come from its
    `variables_description` (JSONB): an object keyed by variable name whose values are either
    the default itself (`{"name": "there", "items": []}`) or a description object whose keys
    are only `default`, `description`, `type` and `example`
    (`{"name": {"default": "there", "description": "Who we greet", "type": "string"}}`).
    Only `default` affects rendering; an entry without one (or a shorthand `null`) documents a
    variable the caller must pass. A default that is itself an object that could read as a
    description is written `{"default": {...}}`. Undefined variables fail the render (strict);
    `{{ x | default('') }}` and `{% if x is defined %}` handle optional ones; `None` prints "".

Channels
    EMAIL: subject and body, the subject must render non-empty. IN_APP: optional subject, body.
    SMS and CHAT: body only (a subject is ignored). PUSH: subject (the title) and body. Bodies
    of EMAIL and IN_APP are HTML and autoescape variables; subjects and other bodies are plain
    text. Subjects are one line: line breaks become spaces; a blank optional subject is None.

Nesting
    `{{ xnovu_render('footer', {'name': name}) }}` renders the body of the enterprise's template
    `footer` with `{**footer's defaults, **the given mapping, **keyword arguments}`. Like a
    function call, it sees only what it is given, not the caller's variables. It renders in the
    mode of the place it is called from (HTML-escaped inside an HTML body, plain text in a
    subject or text channel) and its output is marked safe there, so it is never escaped twice.
    A cycle (a -> b -> a) fails with the cycle named; nesting deeper than TEMPLATE_MAX_DEPTH
    levels fails too. Nested renders share the caller's time budget.

Limits (see shared.templates.sandbox): each field's output is counted while it is generated
and stopped past TEMPLATE_MAX_OUTPUT_BYTES; a render (all fields and nested templates) stops
after TEMPLATE_RENDER_TIMEOUT_SECONDS. Every failure is a `RenderError` (permanent: the
template or its variables are wrong); database errors while loading are raised unchanged
(`SQLAlchemyError`), since retrying may help.

Cache: rows and their compiled sources are kept per (enterprise, template) for
TEMPLATE_CACHE_TTL_SECONDS (0 turns caching off), least recently used evicted past
MAX_CACHED_TEMPLATES. The enterprise's registry generation is re-read at most every
REGISTRY_CHECK_INTERVAL_SECONDS; a newer one (any template or workflow edit) drops that
enterprise's entries, so an edit reaches every process within seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from shared.db.enums import ChannelType, PublishStatus
from shared.db.models import NotificationTemplate
from shared.db.session import transaction
from shared.generation import current_generation
from shared.settings import Settings, get_settings
from shared.templates.sandbox import (
    RenderBudget,
    RenderError,
    RenderLimitExceeded,
    TemplateSecurityError,
    XNovuSandbox,
    build_environment,
    source_errors,
    spending,
)

log = logging.getLogger(__name__)

HTML_CHANNELS = frozenset({ChannelType.EMAIL, ChannelType.IN_APP})
SUBJECT_CHANNELS = frozenset({ChannelType.EMAIL, ChannelType.IN_APP, ChannelType.PUSH})
UNUSABLE_STATUSES = frozenset({PublishStatus.DELETED, PublishStatus.DISCARD})
DESCRIPTION_KEYS = frozenset({"default", "description", "type", "example"})
MAX_CACHED_TEMPLATES = 10_000
MAX_COMPILED_SOURCES = 256
MAX_TEMPLATE_ID = 2**63 - 1
BODY, SUBJECT = "body_template", "subject_template"
# What a template can raise besides Jinja's own errors: wrong types, bad arithmetic, missing keys.
_RUNTIME_ERRORS = (ArithmeticError, LookupError, TypeError, ValueError, AttributeError)


class TemplateNotFound(RenderError):
    """No usable template with that id or key in this enterprise."""


@dataclass(frozen=True, slots=True)
class RenderedContent:
    body: str
    subject: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"body": self.body}
        if self.subject is not None:
            out["subject"] = self.subject
        return out


def variable_defaults(description: Any) -> dict[str, Any]:
    """The default variables a `variables_description` declares (see the module docstring)."""
    if not isinstance(description, Mapping):
        return {}
    defaults: dict[str, Any] = {}
    for name, spec in description.items():
        if isinstance(spec, Mapping) and spec and set(spec) <= DESCRIPTION_KEYS:
            if "default" in spec:
                defaults[name] = spec["default"]
        elif spec is not None:
            defaults[name] = spec
    return defaults


def is_usable(row: NotificationTemplate) -> bool:
    """Whether a row may be rendered: active and neither deleted nor discarded."""
    return not row.deactivated and row.publish_status not in UNUSABLE_STATUSES


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    """What rendering needs of a template row, detached from any session."""

    id: int
    enterprise_id: uuid.UUID
    template_key: str
    channel_type: ChannelType
    subject_template: str | None
    body_template: str
    defaults: Mapping[str, Any]

    @classmethod
    def of(cls, row: NotificationTemplate) -> TemplateRecord:
        assert row.enterprise_id is not None
        return cls(
            id=row.id,
            enterprise_id=row.enterprise_id,
            template_key=row.template_key,
            channel_type=row.channel_type,
            subject_template=row.subject_template,
            body_template=row.body_template,
            defaults=variable_defaults(row.variables_description),
        )


@dataclass(slots=True)
class _Entry:
    record: TemplateRecord
    expires_at: float
    generation: int
    compiled: dict[tuple[str, bool], Template] = field(default_factory=dict)


@dataclass(slots=True)
class _Generation:
    value: int
    checked_at: float


# (field, source, html) -> compiled template
Compiler = Callable[[str, str, bool], Template]


class TemplateRenderer:
    """Renders templates of one enterprise at a time; safe to share between threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_CACHED_TEMPLATES,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._max_entries = max_entries
        max_text = settings.template_max_output_bytes
        self._envs: dict[bool, XNovuSandbox] = {
            True: build_environment(autoescape=True, max_text=max_text),
            False: build_environment(autoescape=False, max_text=max_text),
        }
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[uuid.UUID, int], _Entry] = OrderedDict()
        self._keys: dict[tuple[uuid.UUID, str], int] = {}
        self._generations: dict[uuid.UUID, _Generation] = {}
        self._sources: OrderedDict[tuple[bool, str], Template] = OrderedDict()
        self._stats: Counter[str] = Counter()

    # -- rendering ----------------------------------------------------------------------

    def render_template(
        self, template_id: int, enterprise_id: uuid.UUID, variables: Mapping[str, Any]
    ) -> RenderedContent:
        """Render this enterprise's template `template_id` by its channel's rules."""
        return self._render_entry(self._entry(enterprise_id, template_id=template_id), variables)

    def render_template_by_key(
        self, template_key: str, enterprise_id: uuid.UUID, variables: Mapping[str, Any]
    ) -> RenderedContent:
        """Render this enterprise's template with key `template_key` by its channel's rules."""
        return self._render_entry(self._entry(enterprise_id, template_key=template_key), variables)

    def render_source(
        self,
        channel_type: ChannelType,
        subject_template: str | None,
        body_template: str,
        variables: Mapping[str, Any],
        *,
        enterprise_id: uuid.UUID | None,
        variables_description: Mapping[str, Any] | None = None,
        template_key: str | None = None,
    ) -> RenderedContent:
        """Render sources that are not (or not yet) a cached row: static workflows' inline
        content and previews. `xnovu_render` needs `enterprise_id`; `template_key` names the
        source for cycle detection when it is a saved template."""
        label = f"template {template_key!r}" if template_key else f"{channel_type.value} template"
        with self._budget(enterprise_id, template_key or "<inline>"):
            return self._render_channel(
                channel_type,
                subject_template,
                body_template,
                {**variable_defaults(variables_description), **variables},
                label,
                partial(self._compile_source, label),
            )

    def _render_entry(self, entry: _Entry, variables: Mapping[str, Any]) -> RenderedContent:
        record = entry.record
        label = f"template {record.template_key!r}"
        with self._budget(record.enterprise_id, record.template_key):
            return self._render_channel(
                record.channel_type,
                record.subject_template,
                record.body_template,
                {**record.defaults, **variables},
                label,
                partial(self._compile_entry, entry, label),
            )

    def _render_channel(
        self,
        channel: ChannelType,
        subject_source: str | None,
        body_source: str,
        variables: dict[str, Any],
        label: str,
        compile_: Compiler,
    ) -> RenderedContent:
        html = channel in HTML_CHANNELS
        body = self._render_field(compile_(BODY, body_source, html), variables, label, BODY)
        subject = None
        if channel in SUBJECT_CHANNELS and subject_source is not None:
            template = compile_(SUBJECT, subject_source, False)
            rendered = self._render_field(template, variables, label, SUBJECT)
            subject = " ".join(rendered.splitlines()).strip() or None
        if channel is ChannelType.EMAIL and not subject:
            raise RenderError(f"{label}: an EMAIL template needs a non-empty subject")
        return RenderedContent(body=body, subject=subject)

    def _render_field(
        self, template: Template, variables: Mapping[str, Any], label: str, field_name: str
    ) -> str:
        limit = self.settings.template_max_output_bytes
        where = f"{label} {field_name}"
        parts: list[str] = []
        size = 0
        try:
            for chunk in template.generate(variables):
                size += len(chunk) if chunk.isascii() else len(chunk.encode("utf-8", "replace"))
                if size > limit:
                    raise RenderLimitExceeded(f"{where} renders more than {limit} bytes")
                parts.append(chunk)
        except RenderError:
            raise
        except SecurityError as exc:
            raise TemplateSecurityError(f"{where}: {_message(exc)}") from exc
        except TemplateError as exc:
            raise RenderError(f"{where}: {_message(exc)}") from exc
        except RecursionError as exc:
            raise RenderLimitExceeded(f"{where}: recursion too deep") from exc
        except MemoryError as exc:
            raise RenderLimitExceeded(f"{where}: out of memory") from exc
        except _RUNTIME_ERRORS as exc:
            raise RenderError(f"{where}: {type(exc).__name__}: {_message(exc)}") from exc
        return "".join(parts)

    def _include(
        self, enterprise_id: uuid.UUID, template_key: str, variables: dict[str, Any], html: bool
    ) -> str:
        """`xnovu_render`: the body of another template of the same enterprise."""
        try:
            entry = self._entry(enterprise_id, template_key=template_key)
        except TemplateNotFound as exc:
            # Not TemplateNotFound: the template being rendered exists and is broken, so the
            # notification fails instead of falling back to default content.
            raise RenderError(f"xnovu_render: template {template_key!r} not found") from exc
        label = f"template {template_key!r}"
        template = self._compile_entry(entry, label, BODY, entry.record.body_template, html)
        return self._render_field(template, {**entry.record.defaults, **variables}, label, BODY)

    @contextmanager
    def _budget(self, enterprise_id: uuid.UUID | None, name: str) -> Iterator[RenderBudget]:
        budget = RenderBudget(
            timeout=self.settings.template_render_timeout_seconds,
            max_depth=self.settings.template_max_depth,
            include=partial(self._include, enterprise_id) if enterprise_id else None,
        )
        budget.stack.append(name)
        with spending(budget):
            yield budget

    # -- compiling ----------------------------------------------------------------------

    def _compile(self, source: str, html: bool, where: str) -> Template:
        try:
            return self._envs[html].from_string(source)
        except TemplateSyntaxError as exc:
            raise RenderError(f"{where} line {exc.lineno}: {_message(exc)}") from exc
        except TemplateError as exc:
            raise RenderError(f"{where}: {_message(exc)}") from exc
        except RecursionError as exc:
            raise RenderLimitExceeded(f"{where}: nested too deeply to compile") from exc

    def _compile_entry(
        self, entry: _Entry, label: str, field_name: str, source: str, html: bool
    ) -> Template:
        template = entry.compiled.get((field_name, html))
        if template is None:
            template = self._compile(source, html, f"{label} {field_name}")
            entry.compiled[(field_name, html)] = template
        return template

    def _compile_source(self, label: str, field_name: str, source: str, html: bool) -> Template:
        key = (html, source)
        with self._lock:
            template = self._sources.get(key)
            if template is not None:
                self._sources.move_to_end(key)
                return template
        template = self._compile(source, html, f"{label} {field_name}")
        with self._lock:
            self._sources[key] = template
            while len(self._sources) > MAX_COMPILED_SOURCES:
                self._sources.popitem(last=False)
        return template

    # -- the cache ----------------------------------------------------------------------

    def _entry(
        self,
        enterprise_id: uuid.UUID,
        *,
        template_id: int | None = None,
        template_key: str | None = None,
    ) -> _Entry:
        what = (
            f"template {template_key!r}" if template_key is not None else f"template {template_id}"
        )
        if template_id is not None and not 1 <= template_id <= MAX_TEMPLATE_ID:
            raise TemplateNotFound(f"{what} not found")
        now = self._clock()
        self._check_generation(enterprise_id, now)
        with self._lock:
            entry = self._cached(enterprise_id, template_id, template_key, now)
            self._stats["hits" if entry is not None else "misses"] += 1
        if entry is not None:
            return entry
        record, generation = self._load(enterprise_id, template_id, template_key)
        if record is None:
            raise TemplateNotFound(f"{what} not found")
        entry = _Entry(record, now + self.settings.template_cache_ttl_seconds, generation)
        self._store(entry, now)
        return entry

    def _cached(
        self,
        enterprise_id: uuid.UUID,
        template_id: int | None,
        template_key: str | None,
        now: float,
    ) -> _Entry | None:
        if template_key is not None:
            template_id = self._keys.get((enterprise_id, template_key))
        if template_id is None:
            return None
        entry = self._entries.get((enterprise_id, template_id))
        if entry is None:
            return None
        if template_key is not None and entry.record.template_key != template_key:
            self._keys.pop((enterprise_id, template_key), None)  # renamed since
            return None
        if entry.expires_at <= now:
            self._drop((enterprise_id, template_id))
            self._stats["expirations"] += 1
            return None
        self._entries.move_to_end((enterprise_id, template_id))
        return entry

    def _load(
        self, enterprise_id: uuid.UUID, template_id: int | None, template_key: str | None
    ) -> tuple[TemplateRecord | None, int]:
        stmt = select(NotificationTemplate).where(
            NotificationTemplate.enterprise_id == enterprise_id
        )
        if template_id is not None:
            stmt = stmt.where(NotificationTemplate.id == template_id)
        else:
            stmt = stmt.where(NotificationTemplate.template_key == template_key)
        with transaction(enterprise_id) as session:
            row = session.scalars(stmt).one_or_none()
            generation = current_generation(session, enterprise_id)
            record = TemplateRecord.of(row) if row is not None and is_usable(row) else None
        return record, generation

    def _store(self, entry: _Entry, now: float) -> None:
        if self.settings.template_cache_ttl_seconds <= 0:
            return
        record = entry.record
        with self._lock:
            self._observe_generation(record.enterprise_id, entry.generation, now)
            if entry.generation < self._generations[record.enterprise_id].value:
                return  # loaded before an edit this process has already seen
            key = (record.enterprise_id, record.id)
            self._drop(key)
            self._entries[key] = entry
            self._keys[(record.enterprise_id, record.template_key)] = record.id
            while len(self._entries) > self._max_entries:
                self._drop(next(iter(self._entries)))
                self._stats["evictions"] += 1

    def _drop(self, key: tuple[uuid.UUID, int]) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        name = (key[0], entry.record.template_key)
        if self._keys.get(name) == key[1]:
            del self._keys[name]
        return True

    def _drop_enterprise(self, enterprise_id: uuid.UUID) -> int:
        keys = [key for key in self._entries if key[0] == enterprise_id]
        for key in keys:
            self._drop(key)
        self._stats["invalidations"] += len(keys)
        return len(keys)

    def _check_generation(self, enterprise_id: uuid.UUID, now: float) -> None:
        """Re-read the enterprise's generation when due; a newer one empties its entries."""
        with self._lock:
            known = self._generations.get(enterprise_id)
            interval = self.settings.registry_check_interval_seconds
            if known is None or now - known.checked_at < interval:
                return
            known.checked_at = now  # one thread re-reads; the others keep using the cache
        try:
            with transaction() as session:
                generation = current_generation(session, enterprise_id)
        except SQLAlchemyError as exc:
            log.warning("template cache: cannot read the registry generation: %s", exc)
            return
        with self._lock:
            self._observe_generation(enterprise_id, generation, now)

    def _observe_generation(self, enterprise_id: uuid.UUID, generation: int, now: float) -> None:
        known = self._generations.get(enterprise_id)
        if known is None:
            self._generations[enterprise_id] = _Generation(generation, now)
        elif generation > known.value:
            self._drop_enterprise(enterprise_id)
            known.value, known.checked_at = generation, now

    def invalidate_template(self, enterprise_id: uuid.UUID, template_id: int) -> bool:
        """Forget one template of this process's cache (after an edit commits)."""
        with self._lock:
            dropped = self._drop((enterprise_id, template_id))
            self._stats["invalidations"] += int(dropped)
        return dropped

    def invalidate_enterprise(self, enterprise_id: uuid.UUID) -> int:
        """Forget every cached template of the enterprise; returns how many were dropped."""
        with self._lock:
            return self._drop_enterprise(enterprise_id)

    def get_cache_stats(self) -> dict[str, Any]:
        """Size, counters and settings of the cache, with entries per enterprise."""
        with self._lock:
            per_enterprise = Counter(str(enterprise_id) for enterprise_id, _ in self._entries)
            return {
                "size": len(self._entries),
                "maxEntries": self._max_entries,
                "ttlSeconds": self.settings.template_cache_ttl_seconds,
                "hits": self._stats["hits"],
                "misses": self._stats["misses"],
                "expirations": self._stats["expirations"],
                "evictions": self._stats["evictions"],
                "invalidations": self._stats["invalidations"],
                "compiledSources": len(self._sources),
                "enterprises": dict(per_enterprise),
            }


def _message(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, TemplateError) and exc.message else str(exc)
    return text if len(text) <= 500 else text[:497] + "..."


_validation_env: XNovuSandbox | None = None


def validate_template_source(
    subject_template: str | None, body_template: str
) -> list[dict[str, Any]]:
    """Syntax problems of a template's sources as `{field, line, message}`; empty when valid."""
    global _validation_env
    if _validation_env is None:
        max_text = get_settings().template_max_output_bytes
        _validation_env = build_environment(autoescape=True, max_text=max_text)
    errors = []
    if subject_template is not None:
        errors += source_errors(_validation_env, SUBJECT, subject_template)
    return errors + source_errors(_validation_env, BODY, body_template)


_renderer: TemplateRenderer | None = None
_renderer_pid: int | None = None
_renderer_lock = threading.Lock()


def get_template_renderer() -> TemplateRenderer:
    """The process's renderer; a forked child builds its own rather than share the parent's."""
    global _renderer, _renderer_pid
    pid = os.getpid()
    if _renderer is None or _renderer_pid != pid:
        with _renderer_lock:
            if _renderer is None or _renderer_pid != pid:
                _renderer = TemplateRenderer(get_settings())
                _renderer_pid = pid
    return _renderer
