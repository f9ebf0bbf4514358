"""Rendering of inline channel content (static workflows); the renderer is shared.templates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.db.enums import ChannelType
from shared.templates.renderer import (
    HTML_CHANNELS,
    SUBJECT_CHANNELS,
    RenderedContent,
    get_template_renderer,
)
from shared.templates.sandbox import RenderError
from shared.workflows.definition import ChannelContent

__all__ = ["HTML_CHANNELS", "SUBJECT_CHANNELS", "RenderError", "RenderedContent", "render_channel"]


def render_channel(
    channel: ChannelType, content: ChannelContent, variables: Mapping[str, Any]
) -> RenderedContent:
    """Render one channel's subject and body by that channel's rules (no enterprise, so no
    xnovu_render; delivery moves to TemplateRenderer.render_source with the enterprise)."""
    return get_template_renderer().render_source(
        channel, content.subject, content.body, variables, enterprise_id=None
    )
