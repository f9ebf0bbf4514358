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
    A template whose `undefined_mode` is `blank` prints an undefined variable (and any
    attribute or item of it) as "", as the original XNovu did.

Publishing
    Only a PUBLISH template is used when a notification is sent (the worker, the bridge),
    nested ones too: another status fails the render (`TemplateNotPublished`). A preview
    renders drafts, and the drafts it nests.

Locales
    A template may have variants per locale (`locales`). The render asks for a locale
    (shared.notifications.novu_trigger chooses it) and gets the variant of that tag, else of
    each shorter prefix of it (`fr-CA`, then `fr`), else the template's own subject and body.
    Nested templates are rendered in the same locale.

Channels
    EMAIL: subject and body, the subject must render non-empty. IN_APP: optional subject, body.
    SMS and CHAT: body only (a subject is ignored). PUSH: subject (the title) and body. Bodies
    of EMAIL and IN_APP are HTML and autoescape variables; subjects and other bodies are plain
    text. Subjects are one line: line breaks become spaces; a blank optional subject is None.

Nesting
    `{{ xnovu_render('footer', {'name': name}) }}` renders the body of the enterprise's template
    `footer` with `{**footer's defaults, **the given mapping, **keyword arguments}`. Like a
    function call, it sees only what it is given, not the caller's variables. The original's
    tag form `{% xnovu_render "footer", name: name %}` sees the caller's variables too, the
    tag's on top (as the original's did). Either renders in the
    mode of the place it is called from (HTML-escaped inside an HTML body, plain text in a
    subject or text channel) and its output is marked safe there, so it is never escaped twice.
    A cycle (a -> b -> a) fails with the cycle named; nesting deeper than TEMPLATE_MAX_DEPTH
    levels fails too. Nested renders share the caller's time budget.

Limits (see shared.templates.limits): each field's output is counted while it is generated
and stopped past TEMPLATE_MAX_OUTPUT_BYTES; a render (all fields and nested templates) stops
after TEMPLATE_RENDER_TIMEOUT_SECONDS, or once the values it built take more than
TEMPLATE_MAX_MEMORY_BYTES (RenderMemoryExceeded). Every failure is a `RenderError` (permanent: the
template or its variables are wrong).

Rows come from the TemplateCache (shared.templates.cache), which keeps this renderer's compiled
sources of them too; sources that are not rows (static workflows, previews) are compiled once
and kept, least recently used dropped past MAX_COMPILED_SOURCES.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError

from shared.db.enums import ChannelType
from shared.process import PerProcess
from shared.settings import Settings, get_settings
from shared.templates.cache import (
    CachedTemplate,
    TemplateCache,
    choose_variant,
    variable_defaults,
)
from shared.templates.errors import (
    RenderError,
    RenderLimitExceeded,
    TemplateNotFound,
    TemplateNotPublished,
    TemplateSecurityError,
)
from shared.templates.limits import RenderBudget, check_deadline, spending
from shared.templates.sandbox import XNovuSandbox, source_errors

# TemplateNotFound has always been importable from here; its home is shared.templates.errors.
__all__ = [
    "RenderedContent",
    "TemplateNotFound",
    "TemplateRenderer",
    "get_template_renderer",
    "validate_template_source",
]

HTML_CHANNELS = frozenset({ChannelType.EMAIL, ChannelType.IN_APP})
SUBJECT_CHANNELS = frozenset({ChannelType.EMAIL, ChannelType.IN_APP, ChannelType.PUSH})
MAX_COMPILED_SOURCES = 256
BODY, SUBJECT = "body_template", "subject_template"
# What a template can raise besides Jinja's own errors: wrong types, bad arithmetic, missing keys.
_RUNTIME_ERRORS = (ArithmeticError, LookupError, TypeError, ValueError, AttributeError)


@dataclass(frozen=True, slots=True)
class RenderedContent:
    body: str
    subject: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"body": self.body}
        if self.subject is not None:
            out["subject"] = self.subject
        return out


# (field, source, html) -> compiled template
Compiler = Callable[[str, str, bool], Template]
# A render's settings that nested templates keep: its locale and whether drafts may be used.
Scope = tuple[str | None, bool]


class TemplateRenderer:
    """Renders templates of one enterprise at a time; safe to share between threads."""

    def __init__(self, settings: Settings, *, cache: TemplateCache | None = None) -> None:
        self.settings = settings
        self.cache = cache if cache is not None else TemplateCache(settings)
        max_text = settings.template_max_output_bytes
        # By (html, strict): autoescaped or not, undefined names failing or printing "".
        self._envs: dict[tuple[bool, bool], XNovuSandbox] = {
            (html, strict): XNovuSandbox(autoescape=html, max_text=max_text, strict=strict)
            for html in (True, False)
            for strict in (True, False)
        }
        self._lock = threading.Lock()
        self._sources: OrderedDict[tuple[bool, bool, str], Template] = OrderedDict()

    # -- rendering ----------------------------------------------------------------------

    def render_template(
        self,
        template_id: int,
        enterprise_id: uuid.UUID,
        variables: Mapping[str, Any],
        *,
        locale: str | None = None,
        drafts: bool = False,
    ) -> RenderedContent:
        """Render this enterprise's published template `template_id` by its channel's rules,
        in its variant for `locale`; a preview (`drafts`) renders unpublished ones too."""
        entry = self.cache.get(enterprise_id, template_id=template_id)
        return self._render_entry(entry, variables, (locale, drafts))

    def render_template_by_key(
        self,
        template_key: str,
        enterprise_id: uuid.UUID,
        variables: Mapping[str, Any],
        *,
        locale: str | None = None,
    ) -> RenderedContent:
        """Render this enterprise's published template with key `template_key` by its
        channel's rules, in its variant for `locale`."""
        entry = self.cache.get(enterprise_id, template_key=template_key)
        return self._render_entry(entry, variables, (locale, False))

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
        strict: bool = True,
        locale: str | None = None,
        drafts: bool = False,
    ) -> RenderedContent:
        """Render sources that are not (or not yet) a cached row: static workflows' inline
        content and previews. `xnovu_render` needs `enterprise_id`; `template_key` names the
        source for cycle detection when it is a saved template. Nested templates render in
        `locale`; drafts among them only for a preview (`drafts`)."""
        label = f"template {template_key!r}" if template_key else f"{channel_type.value} template"
        with self._budget(enterprise_id, template_key or "<inline>", (locale, drafts)):
            return self._render_channel(
                channel_type,
                subject_template,
                body_template,
                {**variable_defaults(variables_description), **variables},
                label,
                partial(self._compile_source, label, strict),
            )

    def render_values(
        self,
        value: Any,
        variables: Mapping[str, Any],
        *,
        enterprise_id: uuid.UUID,
        locale: str | None = None,
        where: str = "overrides",
    ) -> Any:
        """`value` (a trigger's `overrides`) with every string that holds template syntax
        rendered, in one budget: as HTML under a key `html`, as plain text elsewhere; keys,
        other strings and non-strings are kept as they are."""
        with self._budget(enterprise_id, "<" + where + ">", (locale, False)):
            return self._render_value(value, variables, where, False)

    def _render_value(
        self, value: Any, variables: Mapping[str, Any], where: str, html: bool
    ) -> Any:
        if isinstance(value, str):
            if not has_template_syntax(value):
                return value
            check_deadline()  # compiling is not free: many strings share the one timeout
            template = self._compile_source("override", True, where, value, html)
            return self._render_field(template, variables, "override", where)
        if isinstance(value, Mapping):
            return {
                key: self._render_value(item, variables, f"{where}.{key}", key == "html")
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [
                self._render_value(item, variables, f"{where}[{index}]", html)
                for index, item in enumerate(value)
            ]
        return value

    def _render_entry(
        self, entry: CachedTemplate, variables: Mapping[str, Any], scope: Scope
    ) -> RenderedContent:
        record = entry.record
        label = f"template {record.template_key!r}"
        _check_published(entry, scope, label)
        variant = choose_variant(record.variants, scope[0])
        subject_source, body_source = record.sources(variant)
        with self._budget(record.enterprise_id, record.template_key, scope):
            return self._render_channel(
                record.channel_type,
                subject_source,
                body_source,
                {**record.defaults, **variables},
                label,
                partial(self._compile_entry, entry, label, variant),
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
        self,
        enterprise_id: uuid.UUID,
        scope: Scope,
        template_key: str,
        variables: dict[str, Any],
        html: bool,
    ) -> str:
        """`xnovu_render`: the body of another template of the same enterprise."""
        try:
            entry = self.cache.get(enterprise_id, template_key=template_key)
        except TemplateNotFound as exc:
            # Not TemplateNotFound: the template being rendered exists and is broken, so the
            # notification fails instead of falling back to default content.
            raise RenderError(f"xnovu_render: template {template_key!r} not found") from exc
        label = f"template {template_key!r}"
        _check_published(entry, scope, f"xnovu_render: {label}")
        variant = choose_variant(entry.record.variants, scope[0])
        _, body_source = entry.record.sources(variant)
        template = self._compile_entry(entry, label, variant, BODY, body_source, html)
        return self._render_field(template, {**entry.record.defaults, **variables}, label, BODY)

    @contextmanager
    def _budget(
        self, enterprise_id: uuid.UUID | None, name: str, scope: Scope
    ) -> Iterator[RenderBudget]:
        budget = RenderBudget(
            timeout=self.settings.template_render_timeout_seconds,
            max_depth=self.settings.template_max_depth,
            max_bytes=self.settings.template_max_memory_bytes,
            include=partial(self._include, enterprise_id, scope) if enterprise_id else None,
        )
        budget.stack.append(name)
        with spending(budget):
            yield budget

    # -- compiling ----------------------------------------------------------------------

    def _compile(self, source: str, html: bool, strict: bool, where: str) -> Template:
        try:
            return self._envs[html, strict].from_string(source)
        except TemplateSyntaxError as exc:
            raise RenderError(f"{where} line {exc.lineno}: {_message(exc)}") from exc
        except TemplateError as exc:
            raise RenderError(f"{where}: {_message(exc)}") from exc
        except RecursionError as exc:
            raise RenderLimitExceeded(f"{where}: nested too deeply to compile") from exc

    def _compile_entry(
        self,
        entry: CachedTemplate,
        label: str,
        variant: str | None,
        field_name: str,
        source: str,
        html: bool,
    ) -> Template:
        template = entry.compiled.get((field_name, html, variant))
        if template is None:
            where = f"{label} {field_name}" + (f" (locale {variant})" if variant else "")
            template = self._compile(source, html, entry.record.strict, where)
            entry.compiled[(field_name, html, variant)] = template
        return template

    def _compile_source(
        self, label: str, strict: bool, field_name: str, source: str, html: bool
    ) -> Template:
        key = (html, strict, source)
        with self._lock:
            template = self._sources.get(key)
            if template is not None:
                self._sources.move_to_end(key)
                return template
        template = self._compile(source, html, strict, f"{label} {field_name}")
        with self._lock:
            self._sources[key] = template
            while len(self._sources) > MAX_COMPILED_SOURCES:
                self._sources.popitem(last=False)
        return template

    # -- this process's cache -----------------------------------------------------------

    def invalidate_template(self, enterprise_id: uuid.UUID, template_id: int) -> bool:
        """Forget one template of this process's cache (after an edit commits)."""
        return self.cache.invalidate_template(enterprise_id, template_id)

    def invalidate_enterprise(self, enterprise_id: uuid.UUID) -> int:
        """Forget every cached template of the enterprise; returns how many were dropped."""
        return self.cache.invalidate_enterprise(enterprise_id)

    def get_cache_stats(self) -> dict[str, Any]:
        """Size, counters and settings of the cache, with entries per enterprise."""
        with self._lock:
            compiled_sources = len(self._sources)
        return {**self.cache.stats(), "compiledSources": compiled_sources}


def _check_published(entry: CachedTemplate, scope: Scope, label: str) -> None:
    """Refuse sending with a template that is not published (a preview may: scope[1])."""
    if not entry.record.published and not scope[1]:
        raise TemplateNotPublished(
            f"{label} is not published: publish it to send with it (a draft is only previewed)"
        )


def _message(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, TemplateError) and exc.message else str(exc)
    return text if len(text) <= 500 else text[:497] + "..."


_validation_env: XNovuSandbox | None = None


def _validation_sandbox() -> XNovuSandbox:
    global _validation_env
    if _validation_env is None:
        max_text = get_settings().template_max_output_bytes
        _validation_env = XNovuSandbox(autoescape=True, max_text=max_text)
    return _validation_env


def validate_template_source(
    subject_template: str | None, body_template: str
) -> list[dict[str, Any]]:
    """Syntax problems of a template's sources as `{field, line, message}`; empty when valid."""
    env = _validation_sandbox()
    errors = []
    if subject_template is not None:
        errors += source_errors(env, SUBJECT, subject_template)
    return errors + source_errors(env, BODY, body_template)


def has_template_syntax(value: str) -> bool:
    """Whether a string of `overrides` is a template (`render_values` renders only those)."""
    return "{{" in value or "{%" in value


@lru_cache(maxsize=1024)
def _override_source_errors(source: str) -> tuple[dict[str, Any], ...]:
    # Triggers tend to repeat the same override strings: each is compiled once.
    return tuple(source_errors(_validation_sandbox(), "", source))


def override_errors(value: Any, where: str = "overrides") -> list[dict[str, Any]]:
    """Syntax problems of the template strings in a trigger's `overrides`, as
    `{field, line, message}` with the string's path as its field; empty when all compile."""
    if isinstance(value, str):
        if not has_template_syntax(value):
            return []
        return [{**error, "field": where} for error in _override_source_errors(value)]
    if isinstance(value, Mapping):
        return [
            error
            for key, item in value.items()
            for error in override_errors(item, f"{where}.{key}")
        ]
    if isinstance(value, list):
        return [
            error
            for index, item in enumerate(value)
            for error in override_errors(item, f"{where}[{index}]")
        ]
    return []


_renderer = PerProcess(lambda: TemplateRenderer(get_settings()))


def get_template_renderer() -> TemplateRenderer:
    """The process's renderer; a forked child builds its own rather than share the parent's."""
    return _renderer.get()
