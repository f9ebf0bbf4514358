"""A small declarative API for static workflows, and what every resolved workflow offers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from shared.db.enums import ChannelType

SubscriberBuilder = Callable[[Mapping[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class ChannelContent:
    """Jinja2 sources of one channel's message. SMS ignores the subject; PUSH uses it as title."""

    body: str
    subject: str | None = None


@dataclass(frozen=True)
class StaticWorkflow:
    """A workflow defined in code and shared by every enterprise."""

    key: str
    channels: Mapping[ChannelType, ChannelContent]
    payload_model: type[BaseModel] | None = None
    payload_json_schema: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    # Derives the Novu subscriber from the payload when the trigger names no recipient.
    subscriber: SubscriberBuilder | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError(f"workflow {self.key!r} has no channels")
        unknown = set(self.channels) - set(ChannelType)
        if unknown:
            raise ValueError(f"workflow {self.key!r} has unknown channels {unknown}")

    @property
    def payload_schema(self) -> dict[str, Any] | None:
        """The payload's JSON Schema, from the pydantic model or given as is."""
        if self.payload_model is not None:
            return self.payload_model.model_json_schema()
        return self.payload_json_schema
