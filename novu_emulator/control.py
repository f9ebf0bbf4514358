"""The emulator's own endpoints under `/_emulator` (no authentication): inspect, fault, reset,
register workflows."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import unquote

from pydantic import ValidationError

from novu_emulator.config import parse_bridge_config
from novu_emulator.faults import FaultConfig, parse_fault_config, validation_problems
from novu_emulator.http import HttpRequest, HttpResponse, json_response
from novu_emulator.state import EmulatorState
from novu_emulator.workflows import parse_registration

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator"
_T = TypeVar("_T")


def _problem(status: int, message: str, **extra: Any) -> HttpResponse:
    return json_response(status, {"statusCode": status, "message": message, **extra})


def _validated(request: HttpRequest, parse: Callable[[Any], _T], what: str) -> _T | HttpResponse:
    """The request's JSON body (`{}` when empty) as `parse` validates it, or the 400 that says
    what is wrong with it."""
    try:
        document = json.loads(request.body or b"{}")
    except ValueError as exc:
        return _problem(400, f"malformed JSON: {exc}")
    try:
        return parse(document)
    except ValidationError as exc:
        return _problem(400, f"invalid {what}", errors=validation_problems(exc))


def _matching(
    entries: Iterable[dict[str, Any]], request: HttpRequest, names: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The entries whose field of each of `names` the query gives is one of its values."""
    filters = {name: request.query[name] for name in names if name in request.query}
    return [
        entry
        for entry in entries
        if all(entry.get(name) in wanted for name, wanted in filters.items())
    ]


class ControlApi:
    """Answers `/_emulator/...` requests."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def handle(self, request: HttpRequest) -> HttpResponse:
        """The answer to one control request."""
        path = request.path.rstrip("/")
        workflow_prefix = f"{CONTROL_PREFIX}/workflows/"
        if path.startswith(workflow_prefix) and "/" not in path[len(workflow_prefix) :]:
            return self._workflow(request, unquote(path[len(workflow_prefix) :]))
        routes = {
            f"{CONTROL_PREFIX}/events": {"GET": self._events},
            f"{CONTROL_PREFIX}/stats": {"GET": self._stats},
            f"{CONTROL_PREFIX}/faults": {
                "GET": self._faults,
                "POST": self._set_faults,
                "DELETE": self._clear_faults,
            },
            f"{CONTROL_PREFIX}/faults/log": {"GET": self._fault_log},
            f"{CONTROL_PREFIX}/reset": {"POST": self._reset},
            f"{CONTROL_PREFIX}/config": {
                "GET": self._config,
                "POST": self._set_config,
                "DELETE": self._restore_config,
            },
            f"{CONTROL_PREFIX}/messages": {"GET": self._messages},
            f"{CONTROL_PREFIX}/workflows": {"GET": self._workflows},
            f"{CONTROL_PREFIX}/subscribers": {"GET": self._subscribers},
            f"{CONTROL_PREFIX}/webhooks": {"GET": self._webhooks},
        }
        methods = routes.get(path)
        if methods is None:
            return _problem(404, f"Cannot {request.method} {request.path}")
        action = methods.get(request.method)
        if action is None:
            allowed = ", ".join(methods)
            return _problem(405, f"Cannot {request.method} {request.path}").with_headers(
                ("Allow", allowed)
            )
        return action(request)

    def _events(self, request: HttpRequest) -> HttpResponse:
        wanted = request.query.get("transactionId")
        return json_response(
            200,
            [
                trigger.to_json()
                for trigger in self.state.triggers
                if wanted is None or trigger.transaction_id in wanted
            ],
        )

    def _stats(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, self.state.stats_json())

    def _faults(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, self.state.faults.to_json())

    def _set_faults(self, request: HttpRequest) -> HttpResponse:
        faults = _validated(request, parse_fault_config, "fault configuration")
        if isinstance(faults, HttpResponse):
            return faults
        self.state.set_faults(faults)
        logger.info("faults set: %s", faults.to_json())
        return json_response(200, faults.to_json())

    def _fault_log(self, request: HttpRequest) -> HttpResponse:
        kinds = request.query.get("kind")
        wanted = request.query.get("transactionId")
        return json_response(
            200,
            [
                entry
                for entry in self.state.fault_log
                if (kinds is None or entry["kind"] in kinds)
                and (wanted is None or any(tx in wanted for tx in entry["transactionIds"]))
            ],
        )

    def _clear_faults(self, request: HttpRequest) -> HttpResponse:
        self.state.set_faults(FaultConfig())
        return json_response(200, self.state.faults.to_json())

    def _config(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, self.state.bridge.to_json())

    def _set_config(self, request: HttpRequest) -> HttpResponse:
        config = _validated(request, parse_bridge_config, "configuration")
        if isinstance(config, HttpResponse):
            return config
        self.state.bridge = config
        logger.info("bridge configuration set: %s", config.to_json())
        return json_response(200, config.to_json())

    def _restore_config(self, request: HttpRequest) -> HttpResponse:
        self.state.bridge = self.state.startup_bridge
        return json_response(200, self.state.bridge.to_json())

    def _messages(self, request: HttpRequest) -> HttpResponse:
        names = ("transactionId", "subscriberId", "workflowId", "channel", "stepId", "status")
        return json_response(200, _matching(self.state.messages, request, names))

    def _webhooks(self, request: HttpRequest) -> HttpResponse:
        names = ("transactionId", "type", "status", "channel")
        return json_response(200, _matching(self.state.webhooks, request, names))

    def _subscribers(self, request: HttpRequest) -> HttpResponse:
        wanted = request.query.get("subscriberId")
        return json_response(
            200,
            [
                subscriber
                for subscriber_id, subscriber in self.state.subscribers.items()
                if wanted is None or subscriber_id in wanted
            ],
        )

    def _workflows(self, request: HttpRequest) -> HttpResponse:
        return json_response(
            200, [workflow.to_json() for workflow in self.state.workflows.values()]
        )

    def _workflow(self, request: HttpRequest, workflow_id: str) -> HttpResponse:
        """PUT registers a workflow by hand (as one made in Novu's dashboard), DELETE forgets it."""
        if request.method == "DELETE":
            known = self.state.workflows.pop(workflow_id, None)
            if known is None:
                return _problem(404, f"workflow {workflow_id!r} is not known")
            return json_response(200, known.to_json())
        if request.method != "PUT":
            return _problem(405, f"Cannot {request.method} {request.path}").with_headers(
                ("Allow", "PUT, DELETE")
            )
        if not workflow_id:
            return _problem(400, "the workflowId must not be empty")
        registration = _validated(request, parse_registration, "workflow")
        if isinstance(registration, HttpResponse):
            return registration
        workflow = registration.known(workflow_id)
        self.state.workflows[workflow_id] = workflow
        return json_response(200, workflow.to_json())

    def _reset(self, request: HttpRequest) -> HttpResponse:
        self.state.reset()
        return json_response(200, {"reset": True})
