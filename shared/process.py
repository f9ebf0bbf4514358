"""One object per process, for the things a forked child must not share with its parent.

Celery's prefork pool forks the worker after modules are imported, and a child that used its
parent's sockets (database pool, HTTP client) or thread pools would corrupt them or hang. A
PerProcess builds its object on first use in each process, once, under a lock. A fork marks it
stale in the child (os.register_at_fork), so get() costs no system call.
"""

from __future__ import annotations

import gc
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


def freeze_startup_objects() -> None:
    """Move every object alive now to the collector's permanent generation.

    Call once a process has started (its modules imported, its app built): those objects live
    as long as the process. Without this, each of the collector's full passes walks all of
    them: some 160,000 in an API or worker process, 85 to 125 ms of CPU per pass, during which
    the process serves nothing. Under load a full pass comes every ten to twenty seconds per
    process (the requests and tasks in flight outlive the young generations); after the freeze
    the same pass walks the objects made since, up to some 30,000, in 0.4 to 6 ms
    (docs/performance.md, "The collector's full passes"). Garbage is collected first, so that
    none is kept forever; what the process makes later is collected as usual. In a parent
    that forks (Celery's prefork pool), frozen objects are also never written by the
    collector, so the children's copies of their pages stay shared. Once per process: a
    second call (another app started in the same process, as tests do) does nothing; a forked
    child freezes what it has made since."""
    global _frozen_in
    if _frozen_in == os.getpid():
        return
    _frozen_in = os.getpid()
    gc.collect()
    gc.freeze()


_frozen_in: int | None = None  # the process that froze its startup objects
