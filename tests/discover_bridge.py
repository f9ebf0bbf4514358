"""A tiny Framework bridge for sync and cancel tests: it answers a signed `GET
?action=discover` with the workflows it is given and a signed `POST ?action=execute` of one
of their steps (a `delay` step waits `delay_seconds`), checking signatures with XNovu's own
verifier."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from api.bridge.errors import BridgeError
from api.bridge.signature import signature_header, verify_signature


@dataclass
class DiscoverBridge:
    """What the bridge declares (`workflowId -> [(stepId, type)]`) and what it was asked."""

    secret_key: str
    workflows: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # Workflows declared with `options.active: false`.
    inactive: set[str] = field(default_factory=set)
    # When set, every request is answered this (status, body) instead.
    answer_with: tuple[int, Any] | None = None
    # What a delay step's execution answers: wait this many seconds.
    delay_seconds: float = 30.0
    discovers: int = 0
    # (workflowId, stepId) of every execute call, in order.
    executed: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    def answer(
        self, action: str | None, headers: dict[str, str], body: bytes, query: dict[str, str]
    ) -> tuple[int, Any]:
        if self.answer_with is not None:
            return self.answer_with
        try:
            verify_signature(signature_header(headers), body or b"{}", self.secret_key)
        except BridgeError as exc:
            return exc.status_code, exc.body()
        if action == "execute":
            return self._execute(query.get("workflowId", ""), query.get("stepId", ""))
        if action != "discover":
            return 400, {"code": "InvalidActionError", "message": f"Invalid action {action}"}
        self.discovers += 1
        return 200, {
            "workflows": [
                {
                    "workflowId": workflow_id,
                    "steps": [{"stepId": step, "type": kind} for step, kind in steps],
                    **({"options": {"active": False}} if workflow_id in self.inactive else {}),
                }
                for workflow_id, steps in self.workflows.items()
            ]
        }

    def _execute(self, workflow_id: str, step_id: str) -> tuple[int, Any]:
        kinds = dict(self.workflows.get(workflow_id, []))
        if step_id not in kinds:
            return 404, {"code": "WorkflowNotFoundError", "message": f"{workflow_id}/{step_id}"}
        self.executed.append((workflow_id, step_id))
        if kinds[step_id] == "delay":
            outputs: dict[str, Any] = {
                "type": "regular",
                "amount": self.delay_seconds,
                "unit": "seconds",
            }
        else:
            outputs = {"body": f"{step_id} of {workflow_id}"}
        return 200, {
            "outputs": outputs,
            "providers": {},
            "options": {"skip": False},
            "metadata": {"status": "success", "error": False, "duration": 1},
        }


@contextmanager
def serve_discover_bridge(
    secret_key: str, workflows: dict[str, list[tuple[str, str]]]
) -> Iterator[DiscoverBridge]:
    """Serve a DiscoverBridge on a free loopback port (its `url` ends in /api/novu)."""
    bridge = DiscoverBridge(secret_key, dict(workflows))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            received = self.rfile.read(length) if length else b""
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, body = bridge.answer(query.get("action"), headers, received, query)
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    bridge.url = f"http://127.0.0.1:{server.server_address[1]}/api/novu"
    try:
        yield bridge
    finally:
        server.shutdown()
        server.server_close()
