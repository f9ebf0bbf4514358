"""Run one process of `make run`, and start it again when it exits on its own.

    python -m devtools.respawn NAME -- COMMAND [ARGS...]

honcho, which runs the processes of `xnovu dev`, stops the whole stack when any of them
exits. A worker that dies (kombu's Redis transport still kills the worker with an
AttributeError after a Redis crash) should come back instead, with a line saying why. So each
process runs under this small supervisor: it restarts its command after an exit it did not
ask for, waiting 1 s and doubling up to 30 s while the command keeps dying within 10 s of
its start, and gives up (exit 1, which stops the stack) after MAX_QUICK_DEATHS quick deaths
in a row. honcho signals each process's whole process group, which the command shares with
this supervisor: so on SIGTERM or SIGINT the command has its signal already, and this only
stops restarting it, waits for it, and exits with its status (forwarding the signal too would
give uvicorn a second one, which aborts requests in flight).

Written here rather than using a process supervisor package: the stack's manager is honcho,
and the restart rule fits in this page.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

QUICK_DEATH_SECONDS = 10.0
MAX_QUICK_DEATHS = 5
FIRST_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 30.0


def _say(name: str, message: str) -> None:
    print(f"[respawn {name}] {message}", file=sys.stderr, flush=True)


def supervise(name: str, command: list[str]) -> int:
    """Run `command` until asked to stop; the exit status to leave with."""
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    quick_deaths = 0
    wait = FIRST_WAIT_SECONDS
    while True:
        started = time.monotonic()
        code = subprocess.Popen(command).wait()
        if stopping:
            return code
        lived = time.monotonic() - started
        if lived < QUICK_DEATH_SECONDS:
            quick_deaths += 1
        else:
            quick_deaths, wait = 0, FIRST_WAIT_SECONDS
        if quick_deaths >= MAX_QUICK_DEATHS:
            _say(
                name,
                f"exited with status {code} {quick_deaths} times within "
                f"{QUICK_DEATH_SECONDS:.0f} s of starting: giving up",
            )
            return 1
        _say(
            name,
            f"exited on its own with status {code} after {lived:.1f} s: restarting in {wait:.0f} s",
        )
        deadline = time.monotonic() + wait
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return code
        wait = min(wait * 2, MAX_WAIT_SECONDS) if quick_deaths else FIRST_WAIT_SECONDS


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m devtools.respawn NAME -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return supervise(argv[0], argv[2:])


def _exit_as(code: int) -> None:
    """Leave with the command's status; one killed by a signal, killed by the same signal."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    _exit_as(main(sys.argv[1:]))
