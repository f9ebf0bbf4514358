"""PerProcess: one object per process; a forked child builds its own and lets go of the
parent's through `inherited`, and the parent keeps its own."""

from __future__ import annotations

import os

from shared.process import PerProcess


def test_one_object_per_process_and_a_forked_child_builds_its_own() -> None:
    built: list[object] = []
    released: list[object] = []

    def build() -> object:
        built.append(object())
        return built[-1]

    holder = PerProcess(build, inherited=released.append)
    parents = holder.get()
    assert holder.get() is parents and len(built) == 1

    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if it built its own and released the parent's
        ok = holder.get() is not parents and len(built) == 2 and released == [parents]
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert holder.get() is parents and released == []


def test_forget_drops_the_object_and_the_next_get_builds_another() -> None:
    holder = PerProcess(object)
    first = holder.get()
    assert holder.forget() is first
    assert holder.get() is not first
