"""Random ids without a system call each (shared/ids.py)."""

from __future__ import annotations

import os
import re
import uuid

from shared import ids
from shared.notifications.repository import new_transaction_id, new_transaction_ids


def test_uuid4s_are_distinct_version_4_uuids():
    values = ids.uuid4s(1000)
    assert len(set(values)) == 1000
    assert all(value.version == 4 and value.variant == uuid.RFC_4122 for value in values)
    assert ids.uuid4s(0) == []


def test_transaction_ids_keep_their_form():
    pattern = re.compile(r"xn-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    batch = new_transaction_ids(50)
    assert len(set(batch)) == 50
    assert all(pattern.fullmatch(value) for value in [*batch, new_transaction_id()])


def test_request_ids_are_32_hex_digits_and_differ_in_a_forked_child():
    first = ids.request_id()
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != ids.request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, ids.request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    # The generator was seeded again in the child: its next id is not the parent's next one.
    assert child != ids.request_id()
