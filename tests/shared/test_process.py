"""PerProcess: one object per process; a forked child builds its own and lets go of the
parent's through `inherited`, and the parent keeps its own. freeze_startup_objects: what is
alive at startup leaves the collector's passes, once per process."""

from __future__ import annotations

import gc
import os

import pytest
from fastapi.testclient import TestClient

import shared.process
from shared.process import PerProcess, freeze_startup_objects


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


def _tracked(value: object) -> bool:
    """Whether the collector's passes still walk `value` (frozen objects are left out)."""
    return any(candidate is value for candidate in gc.get_objects())


def test_startup_objects_are_frozen_once_per_process_and_a_forked_child_freezes_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared.process, "_frozen_in", None)  # as in a process just started
    at_startup: list[object] = [{}]
    freeze_startup_objects()
    assert not _tracked(at_startup)
    later: list[object] = [{}]
    freeze_startup_objects()  # a second app in the same process: nothing more is frozen
    assert _tracked(later)

    pid = os.fork()
    if pid == 0:  # the child freezes what it inherited that its parent had not
        freeze_startup_objects()
        os._exit(0 if not _tracked(later) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _tracked(later)


def test_the_api_freezes_its_startup_objects_when_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from api.app import app

    monkeypatch.setattr(shared.process, "_frozen_in", None)
    with TestClient(app):
        assert shared.process._frozen_in == os.getpid()
