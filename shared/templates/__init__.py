"""Notification templates: the sandboxed Jinja2 renderer and the enterprise-scoped service."""

from shared.templates.renderer import (
    RenderedContent,
    TemplateNotFound,
    TemplateRenderer,
    get_template_renderer,
    validate_template_source,
    variable_defaults,
)
from shared.templates.sandbox import RenderError, RenderLimitExceeded, TemplateSecurityError

__all__ = [
    "RenderError",
    "RenderLimitExceeded",
    "RenderedContent",
    "TemplateNotFound",
    "TemplateRenderer",
    "TemplateSecurityError",
    "get_template_renderer",
    "validate_template_source",
    "variable_defaults",
]
