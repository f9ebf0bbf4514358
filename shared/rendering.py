"""Rendering of channel content with a sandboxed Jinja2 environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shared.db.enums import ChannelType
from shared.workflows.definition import ChannelContent

# Channels whose bodies are HTML and so autoescape variables.
HTML_CHANNELS = frozenset({ChannelType.EMAIL, ChannelType.IN_APP})
SUBJECT_CHANNELS = frozenset({ChannelType.EMAIL, ChannelType.IN_APP, ChannelType.PUSH})


class RenderError(Exception):
    """A template could not be rendered; the notification fails with this reason."""


@dataclass(frozen=True, slots=True)
class RenderedContent:
    body: str
    subject: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"body": self.body}
        if self.subject is not None:
            out["subject"] = self.subject
        return out


_html = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
_text = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


def render_channel(
    channel: ChannelType, content: ChannelContent, variables: Mapping[str, Any]
) -> RenderedContent:
    """Render one channel's subject and body by that channel's rules."""
    body_env = _html if channel in HTML_CHANNELS else _text
    try:
        body = body_env.from_string(content.body).render(variables)
        subject = None
        if channel in SUBJECT_CHANNELS and content.subject is not None:
            subject = _text.from_string(content.subject).render(variables)
    except TemplateError as exc:
        raise RenderError(f"{channel.value} template: {exc}") from exc
    if channel is ChannelType.EMAIL and not subject:
        raise RenderError("EMAIL template rendered an empty subject")
    return RenderedContent(body=body, subject=subject)
