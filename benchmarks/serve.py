"""Serve an ASGI app from N uvicorn processes, each with its own SO_REUSEPORT socket.

    python -m benchmarks.serve api.app:app --port 8000 --workers 2

`uvicorn --workers N` shares one listening socket, and the kernel hands a burst of new
connections to whichever process is in accept() first: with a load generator's 32 keep-alive
connections opened at once, one process often gets almost all of them for the whole run. One
socket per process with SO_REUSEPORT makes the kernel spread connections over the processes
by hash, which is how the benchmark runs both the bare baseline and the XNovu API (Linux;
elsewhere it falls back to `uvicorn --workers`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import sys

import uvicorn


def _serve(app: str, host: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )
    uvicorn.Server(config).run(sockets=[sock])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not hasattr(socket, "SO_REUSEPORT"):
        os.execvp(
            sys.executable,
            [
                sys.executable, "-m", "uvicorn", args.app, "--host", args.host,
                "--port", str(args.port), "--workers", str(args.workers), "--loop", "uvloop",
                "--http", "httptools", "--no-access-log", "--log-level", "warning",
            ],
        )  # fmt: skip
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_serve, args=(args.app, args.host, args.port), daemon=True)
        for _ in range(args.workers)
    ]
    for child in children:
        child.start()

    def stop(*_: object) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)


if __name__ == "__main__":
    sys.exit(main())
