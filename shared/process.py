"""One object per process, for the things a forked child must not share with its parent.

Celery's prefork pool forks the worker after modules are imported, and a child that used its
parent's sockets (database pool, HTTP client) or thread pools would corrupt them or hang. A
PerProcess builds its object on first use in each process, once, under a lock. A fork marks it
stale in the child (os.register_at_fork), so get() costs no system call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """The process's one T, built by `build` on first use; a forked child builds its own.
    `inherited` is called with the parent's object when a child replaces it."""

    def __init__(
        self, build: Callable[[], T], *, inherited: Callable[[T], None] | None = None
    ) -> None:
        self._build = build
        self._inherited = inherited
        self._value: T | None = None
        self._fresh = False  # _value was built in this process
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.Lock()
        self._fresh = False

    def get(self) -> T:
        """This process's object."""
        value = self._value
        if value is not None and self._fresh:
            return value
        with self._lock:
            if self._value is None or not self._fresh:
                if self._value is not None and self._inherited is not None:
                    self._inherited(self._value)
                self._value = self._build()
                self._fresh = True
            return self._value

    def forget(self) -> T | None:
        """Drop the object (the next get() builds a new one); returns what was held."""
        with self._lock:
            value, self._value, self._fresh = self._value, None, False
            return value
