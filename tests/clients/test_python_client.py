"""The Python client (clients/python, `xnovu_client`) against the real stack: a real API
process over HTTP, the real worker; its retries make exactly one notification."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator

import httpx
import pytest
from xnovu_client import (
    AsyncXNovu,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    RetryPolicy,
    TransportError,
    ValidationError,
    XNovu,
    trigger_body,
)

from tests.conftest import api_process, make_tenant, signup_payload

pytestmark = pytest.mark.integration

LATER = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)


@pytest.fixture(scope="module")
def api_url(stack) -> Iterator[str]:
    with api_process(stack, "client-api", RATE_LIMIT_PER_SECOND="0") as url:
        yield url


class LosesFirstAnswer(httpx.HTTPTransport):
    """The network between the client and the API drops the first answer: the request reaches
    the API and is done there, and the client sees a read timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        response = super().handle_request(request)
        if self.requests == 1:
            response.read()
            response.close()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def test_a_trigger_whose_answer_was_lost_is_recorded_once(api_url, client):
    tenant = make_tenant()
    transport = LosesFirstAnswer()
    with XNovu(api_url, tenant.api_key, transport=transport) as xnovu:
        sent = xnovu.trigger("user-signup", signup_payload(), scheduled_for=LATER)
        assert transport.requests == 2
        assert sent.replayed  # the API answered the retry with the notification it recorded
        assert [n.id for n in xnovu.list()] == [sent.notification_id]


def test_a_cancel_whose_answer_was_lost_is_not_repeated(api_url):
    tenant = make_tenant()
    with XNovu(api_url, tenant.api_key) as xnovu:
        sent = xnovu.trigger("user-signup", signup_payload(), scheduled_for=LATER)
    with (
        XNovu(api_url, tenant.api_key, transport=LosesFirstAnswer()) as xnovu,
        pytest.raises(TransportError),
    ):
        xnovu.cancel(sent.notification_id)  # done at the API; not sent again blindly
    with XNovu(api_url, tenant.api_key) as xnovu:
        assert xnovu.get(sent.notification_id).status == "RETRACTED"


def test_the_operations_of_a_caller(api_url, worker, emulator):
    tenant, other = make_tenant(), make_tenant()
    with XNovu(api_url, tenant.api_key) as xnovu:
        sent = xnovu.trigger("user-signup", signup_payload(), tags=["client"])
        assert sent.status == "PENDING" and not sent.replayed
        payload = signup_payload()
        again = xnovu.trigger("user-signup", payload, idempotency_key="same")
        replay = xnovu.trigger("user-signup", payload, idempotency_key="same")
        assert replay.replayed and replay.notification_id == again.notification_id
        with pytest.raises(ValidationError) as reused:  # the same key with another body
            xnovu.trigger("user-signup", signup_payload(), idempotency_key="same")
        assert reused.value.code == "idempotency_key_reused", reused.value

        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
        while xnovu.get(sent.notification_id).status != "SENT":
            assert dt.datetime.now(dt.UTC) < deadline, xnovu.get(sent.notification_id)
        kinds = [event.kind for event in xnovu.events(sent.notification_id, page_size=1)]
        assert kinds[0] == "accepted" and "sent" in kinds

        listed = [n.id for n in xnovu.list(page_size=1)]  # the iterator follows the cursor
        assert listed == [again.notification_id, sent.notification_id]  # newest first
        assert [n.id for n in xnovu.list(tags=["client"])] == [sent.notification_id]

        pending = xnovu.trigger("user-signup", signup_payload(), scheduled_for=LATER)
        assert xnovu.cancel(pending.notification_id, "not needed").status == "RETRACTED"
        assert xnovu.cancel(pending.notification_id).status == "RETRACTED"  # idempotent
        with pytest.raises(ConflictError) as delivered:  # Novu ran its steps: too late
            xnovu.cancel(sent.notification_id)
        assert delivered.value.code == "already_delivered", delivered.value

        bulk = xnovu.trigger_bulk(
            [trigger_body("user-signup", signup_payload()), trigger_body("no-such-workflow")]
        )
        assert (bulk.accepted, bulk.rejected) == (1, 1)
        assert bulk.results[1].error is not None and bulk.results[1].status_code == 404
        assert bulk.batch_id is not None and xnovu.batch(bulk.batch_id).total == 1

        workflows = xnovu.list_workflows()
        assert "user-signup" in workflows.static

    with XNovu(api_url, other.api_key) as stranger, pytest.raises(NotFoundError):
        stranger.get(sent.notification_id)
    with XNovu(api_url, "xnk_" + "0" * 43) as nobody, pytest.raises(AuthenticationError):
        nobody.get(sent.notification_id)


def test_the_async_client(api_url):
    tenant = make_tenant()

    async def run() -> list[int]:
        async with AsyncXNovu(api_url, tenant.api_key) as xnovu:
            sent = await xnovu.trigger("user-signup", signup_payload(), scheduled_for=LATER)
            assert (await xnovu.get(sent.notification_id)).status == "PENDING"
            return [n.id async for n in xnovu.list(page_size=1)]

    assert len(asyncio.run(run())) == 1


class Counts(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


def test_retries_stop_within_their_bounds():
    policy = RetryPolicy(max_attempts=3, max_elapsed=1.0, base=0.1, cap=0.2)
    transport = Counts()
    unreachable = XNovu("http://127.0.0.1:9", "xnk_x", retry=policy, transport=transport)
    with unreachable, pytest.raises(TransportError):
        unreachable.get(1)  # nothing listens: refused, so never sent, so retried
    assert transport.requests == 3
    assert policy.delay(3, 0.0, None) is None  # no fourth attempt
    assert policy.delay(1, 0.0, 0.5) == 0.5  # Retry-After is the floor of the wait
    assert policy.delay(1, 0.6, 0.5) is None  # it would end past max_elapsed


def test_an_unknown_enterprise_id_is_refused_for_a_service_key(api_url):
    service = make_tenant(service=True)
    with XNovu(api_url, service.api_key) as xnovu, pytest.raises(Exception) as refused:
        xnovu.trigger("user-signup", signup_payload())
    assert getattr(refused.value, "status_code", None) == 400
    with XNovu(api_url, service.api_key, enterprise_id=uuid.uuid4()) as xnovu:
        assert xnovu.trigger("user-signup", signup_payload(), scheduled_for=LATER).notification_id
