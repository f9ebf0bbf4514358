"""Notification templates: the sandboxed Jinja2 renderer and the enterprise-scoped service."""

from shared.templates.cache import variable_defaults
from shared.templates.errors import (
    RenderError,
    RenderLimitExceeded,
    RenderMemoryExceeded,
    TemplateNotFound,
    TemplateSecurityError,
)
from shared.templates.renderer import (
    RenderedContent,
    TemplateRenderer,
    get_template_renderer,
    validate_template_source,
)

__all__ = [
    "RenderError",
    "RenderLimitExceeded",
    "RenderMemoryExceeded",
    "RenderedContent",
    "TemplateNotFound",
    "TemplateRenderer",
    "TemplateSecurityError",
    "get_template_renderer",
    "validate_template_source",
    "variable_defaults",
]
