"""The errors the domain raises when one of its rules refuses a request.

Each kind names what went wrong in the domain's terms; `api/errors.py` gives each kind its
HTTP status in one table, so no rule of the domain knows about HTTP and no route maps errors
of its own. `code` is the stable machine-readable reason callers see in the error body.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the domain refuses: a stable `code`, a message for people, optional details."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class MissingInput(DomainError):
    """The request lacks something the rule needs (a service key naming no enterprise)."""


class NotAllowed(DomainError):
    """The caller may not act for that enterprise."""


class NotFound(DomainError):
    """No such thing for this enterprise (another enterprise's rows are not found either)."""


class InvalidInput(DomainError):
    """The input breaks a rule: a schema, a limit on a count, a value that cannot be stored."""


class TooLarge(DomainError):
    """The input is over a size limit."""


class StateConflict(DomainError):
    """The thing is not in a state that allows the operation."""


class Unavailable(DomainError):
    """A part the operation needs (the database) is unavailable: nothing was done, retry."""

    def __init__(self, code: str, message: str, retry_after_seconds: int = 2) -> None:
        super().__init__(code, message)
        self.retry_after_seconds = retry_after_seconds
