"""One object per process, for the things a forked child must not share with its parent.

Celery's prefork pool forks the worker after modules are imported, and a child that used its
parent's sockets (database pool, HTTP client) or thread pools would corrupt them or hang. A
PerProcess builds its object on first use in each process, once, under a lock.
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
        self._pid: int | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """This process's object."""
        value, pid = self._value, os.getpid()
        if value is not None and self._pid == pid:
            return value
        with self._lock:
            if self._value is None or self._pid != pid:
                if self._value is not None and self._inherited is not None:
                    self._inherited(self._value)
                self._value = self._build()
                self._pid = pid
            return self._value

    def forget(self) -> T | None:
        """Drop the object (the next get() builds a new one); returns what was held."""
        with self._lock:
            value, self._value, self._pid = self._value, None, None
            return value
