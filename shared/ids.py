"""Random ids without a system call each.

`uuid.uuid4()` reads 16 bytes with `os.urandom`, a `getrandom` system call that CPython makes
with the GIL released. In an API process whose recorder thread waits for the GIL, each release
on the event loop handed the GIL over and waited to get it back (docs/performance.md, "The
line per trigger"). So ids drawn per trigger come in batches, or from a generator that needs
no system call:

- `uuid4s(n)`: n version-4 UUIDs from one `os.urandom` call, as unpredictable as `uuid4()`'s
  (transaction ids, which Novu de-duplicates on, and message ids).
- `request_id()`: 32 hex digits from the process's own `random.Random` (seeded from
  `os.urandom`, and seeded again in a forked child). Request ids correlate log lines; nothing
  relies on their being unpredictable, and a caller may choose its own.
"""

from __future__ import annotations

import os
import random
import uuid

_REQUEST_IDS = random.Random()
if hasattr(os, "register_at_fork"):  # a forked child must not repeat its parent's ids
    os.register_at_fork(after_in_child=_REQUEST_IDS.seed)


def uuid4s(count: int) -> list[uuid.UUID]:
    """`count` random (version 4) UUIDs, from one read of the system's random source."""
    if count <= 0:
        return []
    data = os.urandom(16 * count)
    return [uuid.UUID(bytes=data[i : i + 16], version=4) for i in range(0, 16 * count, 16)]


def request_id() -> str:
    """A new request id: 32 lowercase hex digits, as `uuid4().hex`."""
    return f"{_REQUEST_IDS.getrandbits(128):032x}"
