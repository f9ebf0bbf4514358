"""Why a template cannot be rendered: every failure is a `RenderError` (permanent: the template
or its variables are wrong, so retrying cannot help)."""

from __future__ import annotations


class RenderError(Exception):
    """A template could not be rendered; the notification fails with this reason."""


class TemplateSecurityError(RenderError):
    """The template tried something the sandbox refuses (private attributes, unsafe calls)."""


class RenderLimitExceeded(RenderError):
    """Rendering went over a time, size or nesting limit."""


class TemplateNotFound(RenderError):
    """No usable template with that id or key in this enterprise."""


class TemplateNotPublished(RenderError):
    """The template exists but is not PUBLISH: it may be previewed, never sent."""


class RenderMemoryExceeded(RenderLimitExceeded):
    """The values a render built went over its memory budget (TEMPLATE_MAX_MEMORY_BYTES)."""


class RenderDeferred(Exception):
    """A slow render gives way to another enterprise's: its row goes back, no attempt used
    (shared/notifications/fairness.py). Not a RenderError: nothing is wrong with the template."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class RenderMoved(RenderDeferred):
    """A render turned slow on a thread of normal priority: it stops, to be rendered again on
    the low-priority thread of its enterprise's lane (shared/notifications/fairness.py).
    Rendering has no side effects, so starting again loses only the time already spent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0.0)
