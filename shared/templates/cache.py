"""TemplateCache: an enterprise's template rows, loaded on first use and kept fresh.

Rows (and the renderer's compiled sources of them) are kept per (enterprise, template) for
TEMPLATE_CACHE_TTL_SECONDS (0 turns caching off), least recently used evicted past
MAX_CACHED_TEMPLATES. The enterprise's registry generation is re-read at most every
REGISTRY_CHECK_INTERVAL_SECONDS; a newer one (any template or workflow edit) drops that
enterprise's entries, so an edit reaches every process within seconds. Database errors while
loading are raised unchanged (`SQLAlchemyError`), since retrying may help.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Template
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from shared.db.enums import ChannelType, PublishStatus
from shared.db.models import NotificationTemplate
from shared.db.session import transaction
from shared.generation import current_generation
from shared.settings import Settings
from shared.templates.errors import TemplateNotFound

log = logging.getLogger(__name__)

UNUSABLE_STATUSES = frozenset({PublishStatus.DELETED, PublishStatus.DISCARD})
DESCRIPTION_KEYS = frozenset({"default", "description", "type", "example"})
MAX_CACHED_TEMPLATES = 10_000
MAX_TEMPLATE_ID = 2**63 - 1


def variable_defaults(description: Any) -> dict[str, Any]:
    """The default variables a `variables_description` declares (see shared.templates.renderer)."""
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
    """Whether a row may be rendered: active and neither deleted nor discarded. Only a
    PUBLISH one is used at send time (`TemplateRecord.published`); the others are previewed."""
    return not row.deactivated and row.publish_status not in UNUSABLE_STATUSES


# A locale tag as far as choosing a variant needs (the template API holds variants to it).
LOCALE_PATTERN = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}")
MAX_LOCALE_LENGTH = 3 + 3 * 9  # the longest tag LOCALE_PATTERN matches


def usable_locale(value: Any) -> str | None:
    """`value` when it is a locale tag a variant could serve, else None."""
    if isinstance(value, str) and LOCALE_PATTERN.fullmatch(value):
        return value
    return None


def locale_chain(locale: str) -> list[str]:
    """The variants a locale tag asks for, most specific first, lowercased:
    `fr-CA` → [`fr-ca`, `fr`]; `zh_Hant_TW` → [`zh-hant-tw`, `zh-hant`, `zh`]."""
    parts = locale.strip().replace("_", "-").lower().split("-")
    return ["-".join(parts[:end]) for end in range(len(parts), 0, -1) if parts[end - 1]]


def choose_variant(variants: Mapping[str, Any], locale: str | None) -> str | None:
    """The key (lowercased tag) of the variant that serves `locale`, or None for the
    template's own content: the tag itself, then each shorter prefix of it."""
    if not variants or not locale:
        return None
    for tag in locale_chain(locale):
        if tag in variants:
            return tag
    return None


@dataclass(frozen=True, slots=True)
class Variant:
    """One locale's sources of a template."""

    subject_template: str | None
    body_template: str


def variants_of(locales: Any) -> dict[str, Variant]:
    """A row's `locales` by lowercased tag (the API checked them; anything else is skipped)."""
    if not isinstance(locales, Mapping):
        return {}
    variants = {}
    for tag, sources in locales.items():
        if isinstance(sources, Mapping) and isinstance(sources.get("body_template"), str):
            subject = sources.get("subject_template")
            variants[str(tag).lower()] = Variant(
                subject if isinstance(subject, str) else None, sources["body_template"]
            )
    return variants


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
    published: bool = True
    strict: bool = True
    variants: Mapping[str, Variant] = field(default_factory=dict)

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
            published=row.publish_status is PublishStatus.PUBLISH,
            strict=row.undefined_mode != "blank",
            variants=variants_of(row.locales),
        )

    def sources(self, variant: str | None) -> tuple[str | None, str]:
        """(subject, body) of a variant (None: the template's own)."""
        if variant is None:
            return self.subject_template, self.body_template
        chosen = self.variants[variant]
        return chosen.subject_template, chosen.body_template


@dataclass(slots=True)
class CachedTemplate:
    """One cached row; `compiled` holds the renderer's templates of it by (field, html,
    variant)."""

    record: TemplateRecord
    expires_at: float
    generation: int
    compiled: dict[tuple[str, bool, str | None], Template] = field(default_factory=dict)


@dataclass(slots=True)
class _Generation:
    value: int
    checked_at: float


class TemplateCache:
    """Template rows per (enterprise, template id), also found by key; thread-safe."""

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
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[uuid.UUID, int], CachedTemplate] = OrderedDict()
        self._keys: dict[tuple[uuid.UUID, str], int] = {}
        self._generations: dict[uuid.UUID, _Generation] = {}
        self._stats: Counter[str] = Counter()

    def get(
        self,
        enterprise_id: uuid.UUID,
        *,
        template_id: int | None = None,
        template_key: str | None = None,
    ) -> CachedTemplate:
        """The enterprise's usable template of that id or key; TemplateNotFound otherwise."""
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
        entry = CachedTemplate(record, now + self.settings.template_cache_ttl_seconds, generation)
        self._store(entry, now)
        return entry

    def invalidate_template(self, enterprise_id: uuid.UUID, template_id: int) -> bool:
        """Forget one template (after an edit commits); whether it was cached."""
        with self._lock:
            dropped = self._drop((enterprise_id, template_id))
            self._stats["invalidations"] += int(dropped)
        return dropped

    def invalidate_enterprise(self, enterprise_id: uuid.UUID) -> int:
        """Forget every template of the enterprise; returns how many were dropped."""
        with self._lock:
            return self._drop_enterprise(enterprise_id)

    def stats(self) -> dict[str, Any]:
        """Size, counters and settings, with entries per enterprise."""
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
                "enterprises": dict(per_enterprise),
            }

    def _cached(
        self,
        enterprise_id: uuid.UUID,
        template_id: int | None,
        template_key: str | None,
        now: float,
    ) -> CachedTemplate | None:
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

    def _store(self, entry: CachedTemplate, now: float) -> None:
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
