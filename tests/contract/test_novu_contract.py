"""Contract tests: what XNovu relies on from Novu's REST API, checked against the emulator
always and against a real Novu when one is configured, so that the two can be compared.

Real Novu (tests skipped unless set):
- `NOVU_CONTRACT_SECRET_KEY`: the secret key of a Novu environment kept for these tests
  (a sync deletes the environment's code-first workflows its bridge no longer lists);
- `NOVU_CONTRACT_API_URL`: default https://api.novu.co;
- `NOVU_CONTRACT_WORKFLOW_ID`: a workflow of that environment made of channel steps only
  (no delay or digest), for the trigger tests;
- `NOVU_CONTRACT_BRIDGE_URL`: a bridge Novu can reach, declaring that workflow, for the
  sync test (skipped without it).

Against the emulator (`python -m shared.cli novu-emulator`, its own process, Novu's Free
tier), the workflow comes from a sync of a tiny signed-discover bridge served by the test.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from devtools.devstack import free_port
from shared.novu.client import NovuClient
from shared.novu.errors import NovuPermanentError
from shared.novu.schemas import TriggerEvent
from tests.conftest import _spawn, _stop, _wait_for
from tests.discover_bridge import serve_discover_bridge

EMULATOR_SECRET = "contract-test-secret"
EMULATED_WORKFLOW = "xnovu-contract"
SOURCE = "xnovu-contract-tests"


@dataclass(frozen=True)
class Novu:
    """A Novu to check: its URL, secret key, a triggerable workflow, and a reachable bridge."""

    name: str
    url: str
    secret_key: str
    workflow_id: str | None
    bridge_url: str | None

    def raw(self) -> httpx.Client:
        """An authenticated client for calls our NovuClient does not make (or to see headers)."""
        headers = {"Authorization": f"ApiKey {self.secret_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def client(self) -> NovuClient:
        return NovuClient(self.url, self.secret_key, timeout=30)

    def workflow(self) -> str:
        if self.workflow_id is None:
            pytest.skip("set NOVU_CONTRACT_WORKFLOW_ID to trigger a workflow of the real Novu")
        return self.workflow_id


@pytest.fixture(scope="module")
def emulated_novu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Novu]:
    """The emulator as its own process, as `make run` starts it, knowing one synced workflow."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NOVU_SECRET_KEY": EMULATOR_SECRET}
    env.pop("NOVU_EMULATOR_EVENTS_RPS", None)  # Novu's Free tier, the default
    log = tmp_path_factory.mktemp("contract") / "emulator.log"
    proc = _spawn(
        [sys.executable, "-m", "shared.cli", "novu-emulator", "--port", str(port)], env, log
    )
    try:
        _wait_for(
            lambda: httpx.get(f"{url}/_emulator/stats").status_code == 200,
            20,
            f"the Novu emulator (log: {log})",
        )
        steps = [("inbox", "in_app"), ("mail", "email")]
        with serve_discover_bridge(EMULATOR_SECRET, {EMULATED_WORKFLOW: steps}) as bridge:
            yield Novu("emulator", url, EMULATOR_SECRET, EMULATED_WORKFLOW, bridge.url)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def real_novu() -> Novu:
    secret_key = os.environ.get("NOVU_CONTRACT_SECRET_KEY")
    if not secret_key:
        pytest.skip("set NOVU_CONTRACT_SECRET_KEY to check a real Novu")
    return Novu(
        "novu",
        os.environ.get("NOVU_CONTRACT_API_URL") or "https://api.novu.co",
        secret_key,
        os.environ.get("NOVU_CONTRACT_WORKFLOW_ID") or None,
        os.environ.get("NOVU_CONTRACT_BRIDGE_URL") or None,
    )


@pytest.fixture(scope="module", params=["emulator", "novu"])
def novu(request: pytest.FixtureRequest) -> Novu:
    """Each test runs against the emulator, then against the real Novu when configured."""
    target: Novu = request.getfixturevalue(
        "emulated_novu" if request.param == "emulator" else "real_novu"
    )
    if target.name == "emulator":
        # The emulator knows no workflow until it is synced, as Novu.
        assert target.bridge_url is not None
        with target.client() as client:
            client.sync_bridge(target.bridge_url, source=SOURCE)
    return target


def event(workflow_id: str, **fields: object) -> TriggerEvent:
    """A trigger of the workflow for a fresh subscriber with a fresh transactionId."""
    values: dict[str, object] = {
        "name": workflow_id,
        "to": f"xnovu-contract-{uuid.uuid4().hex[:12]}",
        "payload": {},
        "transaction_id": f"xnovu-contract-{uuid.uuid4()}",
        **fields,
    }
    return TriggerEvent.model_validate(values)


def test_trigger_is_201_processed_with_rate_limit_headers(novu: Novu) -> None:
    sent = event(novu.workflow())

    with novu.raw() as http:
        response = http.post("/v1/events/trigger", json=sent.to_body())

    assert response.status_code == 201
    assert response.json()["data"] == {
        "acknowledged": True,
        "status": "processed",
        "transactionId": sent.transaction_id,
    }
    for header in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        assert int(response.headers[header]) >= 0
    policy = response.headers["RateLimit-Policy"]
    assert policy.startswith(f"{response.headers['RateLimit-Limit']};w=5;burst=")
    assert 'category="trigger"' in policy
    assert 'cost="single"' in policy


def test_our_client_triggers_and_reads_the_rate_limit(novu: Novu) -> None:
    sent = event(novu.workflow())

    with novu.client() as client:
        result = client.trigger(sent)

    assert (result.acknowledged, result.status) == (True, "processed")
    assert result.transaction_id == sent.transaction_id
    assert result.rate_limit is not None


def test_bulk_answers_one_processed_result_per_event(novu: Novu) -> None:
    sent = [event(novu.workflow()) for _ in range(2)]

    with novu.raw() as http:
        response = http.post(
            "/v1/events/trigger/bulk", json={"events": [e.to_body() for e in sent]}
        )
    with novu.client() as client:
        results = client.trigger_bulk([event(novu.workflow()) for _ in range(2)])

    assert response.status_code == 201
    assert [item["status"] for item in response.json()["data"]] == ["processed"] * 2
    assert [item["transactionId"] for item in response.json()["data"]] == [
        e.transaction_id for e in sent
    ]
    assert 'cost="bulk"' in response.headers["RateLimit-Policy"]
    assert [result.status for result in results] == ["processed"] * 2


def test_cancel_of_a_trigger_not_held_in_a_delay_step_is_false(novu: Novu) -> None:
    sent = event(novu.workflow())

    with novu.client() as client:
        client.trigger(sent)
        cancelled = client.cancel(sent.transaction_id)
    with novu.raw() as http:
        unknown = http.delete(f"/v1/events/trigger/xnovu-contract-never-{uuid.uuid4()}")

    assert cancelled is False
    assert unknown.status_code == 200
    assert unknown.json() == {"data": False}


def test_unknown_workflow_is_422_workflow_not_found(novu: Novu) -> None:
    sent = event(f"xnovu-contract-no-such-workflow-{uuid.uuid4().hex[:8]}")

    with novu.raw() as http:
        response = http.post("/v1/events/trigger", json=sent.to_body())
    with novu.client() as client, pytest.raises(NovuPermanentError) as refused:
        client.trigger(sent)

    assert response.status_code == 422
    assert response.json()["message"] == "workflow_not_found"
    assert refused.value.status_code == 422


def test_unknown_tenant_is_201_but_not_processed(novu: Novu) -> None:
    sent = event(novu.workflow(), tenant=f"xnovu-contract-missing-{uuid.uuid4().hex[:8]}")

    with novu.raw() as http:
        response = http.post("/v1/events/trigger", json=sent.to_body())
    with novu.client() as client, pytest.raises(NovuPermanentError) as refused:
        client.trigger(sent)

    assert response.status_code == 201
    assert response.json()["data"]["acknowledged"] is True
    assert response.json()["data"]["status"] == "no_tenant_found"
    assert refused.value.status_code == 201


def test_sync_discovers_the_bridges_workflows(novu: Novu) -> None:
    if novu.bridge_url is None:
        pytest.skip("set NOVU_CONTRACT_BRIDGE_URL to a bridge the real Novu can reach")

    with novu.raw() as http:
        response = http.post(
            "/v1/bridge/sync", params={"source": SOURCE}, json={"bridgeUrl": novu.bridge_url}
        )
    with novu.client() as client:
        stored = client.sync_bridge(novu.bridge_url, source=SOURCE)

    assert response.status_code == 201
    assert 'category="global"' in response.headers["RateLimit-Policy"]
    identifiers = {trigger["identifier"] for workflow in stored for trigger in workflow["triggers"]}
    assert novu.workflow() in identifiers


def test_sync_of_an_unreachable_bridge_is_400(novu: Novu) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api/novu"

    with novu.raw() as http:
        response = http.post("/v1/bridge/sync", json={"bridgeUrl": dead})

    assert response.status_code == 400
    assert response.json()["statusCode"] == 400
