"""A local stand-in for Novu's REST API, for `make run` and the tests.

Same paths, bodies, envelopes, status codes, limits, rate limits, sync and deduplication as
Novu (Novu's API reference, https://docs.novu.co/api-reference, and its source), never
kinder, plus fault injection. One asyncio process; all state is in memory and lost on exit.

Novu endpoints (need `Authorization: ApiKey <secret key>`, else 401):
- `POST /v1/events/trigger` -> 201 `{"data": {acknowledged, status, transactionId}}`.
  422 for a body failing Novu's checks (`name`, `to` with at most 100 recipients,
  ...), 422 `workflow_not_found` for a workflow the emulator does not know (never synced,
  deleted by a later sync, nor registered by hand; see `/_emulator/workflows`), 413 when
  the event is over 512 KB. A trigger naming a `tenant` answers 201 `{acknowledged,
  status: "no_tenant_found"}` (Novu needs the tenant created first; the emulator has no
  tenants), a known but inactive workflow `trigger_not_active`, one without steps
  `no_workflow_steps_defined`: nothing is queued. A transactionId already accepted gets
  201 `processed` again; it is dropped (`stats.duplicates`) unless it arrives within the
  deduplication race window after the first (100 ms by default,
  `--dedupe-race-window-ms` / NOVU_EMULATOR_DEDUPE_RACE_WINDOW_MS, or the
  `dedupeRaceWindowMs` fault while set): then it runs too (`stats.duplicatesRun`), as
  Novu's deduplication is a lookup in its worker, not an atomic check.
- `POST /v1/events/trigger/bulk` `{"events": [...]}` (1 to 100, else 422) ->
  201 `{"data": [result, ...]}`; an invalid event gets its own `status: "error"`
  result, an event over 512 KB fails the whole call with 413.
- `DELETE /v1/events/trigger/{transactionId}` -> 200 `{"data": true}` only when a run of
  that transaction is waiting in a delay step of its workflow (executed on the bridge, see
  below) and is now cancelled: its remaining steps never run. Otherwise `{"data": false}`:
  unknown, still queued (`holdSeconds`), running its channel steps, finished, or already
  cancelled, as Novu cancels only delayed (and digested) jobs.
- `POST /v1/bridge/sync[?source=NAME]` `{"bridgeUrl": URL}` -> 201 `{"data": [workflow,
  ...]}`, as Novu syncs code-first workflows: one signed `GET <bridgeUrl>?action=discover`
  (no retry), every workflow it lists is remembered (its steps, the bridge URL, when, the
  source; `options.active: false` makes it inactive), the synced workflows it no longer lists
  are deleted (hand-registered ones stay), and the URL becomes the bridge triggers are executed
  on. Each answered workflow is `{_id, name, active, type: "BRIDGE", origin: "external",
  triggers: [{type, identifier, variables}], steps: [{stepId, name, uuid, template: {type,
  name}}]}` (a subset of Novu's entity). No `bridgeUrl` -> 400 with Novu's message list, a
  non-string one 422; a bridge that cannot be reached (connection refused, 404) -> 400
  "Unable to reach Bridge Endpoint at `<url>?action=discover`. ...", a timeout -> 400 "Bridge
  request timeout for `...`", a @novu/framework error (e.g. a signature mismatch) -> 400 with
  its message, 405/502 -> 400 with Novu's messages, any other failure -> Novu's generic 500.
  Nothing known changes when a sync fails.
- Request bodies: Novu's JSON body parser reads up to 20 MB under `/v1/events` and
  `/v1/bridge/sync` and up to 100 KB on other `/v1` paths; a larger body is refused before
  authentication with Express's 413 HTML page (`<pre>Payload Too Large</pre>`, not JSON)
  and the connection is closed. The 512 KB limit per trigger event comes after.
- `Idempotency-Key` on POST (at most 255 characters, else 400), kept 24 h: while
  the first request is in flight the same key gets 409 with `Retry-After: 1`;
  afterwards the same body gets the stored answer again with
  `Idempotency-Replay: true`, a different body gets 422. Stored answers include
  Novu's own 4xx errors, as Novu does.
- Novu's rate limits are always enforced (see ratelimit.py for the exact algorithm): a
  token bucket per category for the tier given by `--events-rps` /
  NOVU_EMULATOR_EVENTS_RPS (default 60 tokens/s, Novu's Free tier; 600 is Business, 6000
  Enterprise). Trigger and cancel cost 1 token and a bulk trigger 100, from the Events
  ("trigger") bucket; a sync costs 1 from the global bucket (half the Events rate, as in
  every Novu tier). Bucket size is 5 s of tokens plus 10 % burst; tokens refill only once
  a request finds too few. Every answer past authentication carries
  `RateLimit-Limit/-Remaining/-Reset/-Policy`; a refused request is 429 `{"statusCode": 429,
  "message": "API rate limit exceeded"}` with `Retry-After` (whole seconds until that cost
  fits), and is not handled at all. The `rateLimitPerSecond` fault replaces the Events rate
  (and the global one with half of it) while set.

Emulator endpoints (no authentication):
- `GET /_emulator/events[?transactionId=X]`: accepted triggers in order, each
  `{transactionId, name, to, payload, overrides?, actor?, tenant?, context?,
  receivedAt, cancelled}`.
- `GET /_emulator/stats`: `{accepted, recipientsDropped, duplicates, duplicatesRun,
  cancelled, requests, tokens, syncs, idempotency: {replayed, inFlightConflicts,
  bodyMismatches}, faults: {latency, drop, dropAfterAccept, rateLimited, "status:500": N,
  ...}, bridge: {...}}`.
  `requests` counts every `/v1` request; `tokens` is `{spent, refused, refusedRequests,
  eventsRps, byEndpoint: {trigger|bulk-trigger|cancel|sync: {spent, refused}}}`: the tokens
  charged to requests the rate limiter admitted, those asked by the ones it refused (429),
  and the Events rate in force; `syncs` the syncs that succeeded; `faults` counts faults
  actually injected (`rateLimited`: the 429s of the rate limiter).
- `GET /_emulator/faults/log[?kind=status:400&transactionId=X]`: every injected fault but the
  constant `latencyMs`, in order, each `{kind, transactionIds, status?, at}` (`kind` as in
  `stats.faults`; `transactionIds` those the request carried). The last 100,000 are kept.
- `GET /_emulator/faults` shows, `POST /_emulator/faults` replaces (omitted
  fields take their defaults) and `DELETE /_emulator/faults` clears the faults.
- `POST /_emulator/reset`: forget triggers, messages, counters, faults, idempotency keys and
  synced workflows, and restore the bridge configuration the emulator was started with.
- `GET /_emulator/config` shows, `POST /_emulator/config` replaces and
  `DELETE /_emulator/config` restores (to `--bridge-url` / NOVU_BRIDGE_URL) the Framework
  bridge configuration: `{bridgeUrl, timeoutMs, attempts, retryBaseMs,
  discoverTtlSeconds}` (see config.py).
- `GET /_emulator/workflows`: the workflows Novu knows, each `{workflowId, steps: [{stepId,
  type}], bridgeUrl, syncedAt, source, active}`.
- `PUT /_emulator/workflows/{workflowId}` `{"steps": [{stepId, type}], "active": true}` (both
  optional; steps default to one `in_app` step `in-app`) registers a workflow by hand, the way
  Novu knows one made in its dashboard without a sync (for tests without a bridge); its
  `bridgeUrl` is null and no sync deletes it. `DELETE` forgets one (404 if unknown). The
  `workflows` argument of `start_in_thread`/`EmulatorServer` registers names this way at
  startup, and `POST /_emulator/reset` goes back to those.
- `GET /_emulator/subscribers[?subscriberId=X]`: Novu's subscribers as triggers left them,
  each `{subscriberId, email?, phone?, firstName?, ...}`: a trigger Novu runs creates every
  subscriber its `to` names and updates it with the fields of an inline subscriber object.
- `GET /_emulator/messages[?transactionId=&subscriberId=&workflowId=&stepId=&channel=]`:
  what the bridge's steps delivered, in order, each `{transactionId, workflowId, stepId,
  channel, subscriberId, outputs, deliveredAt}`.
- `GET /_emulator/webhooks[?transactionId=&type=&status=&channel=]`: Novu's message webhooks
  sent to `--webhook-url` (NOVU_EMULATOR_WEBHOOK_URL), in order, each `{svixId, type,
  transactionId, subscriberId, channel, status: pending | delivered | failed, attempts,
  lastStatusCode, lastError}`; `stats.webhooks` counts `{sent, attempts, delivered, failed}`.

Framework bridge (Novu's side, see bridge.py): with a bridge URL (the last sync's, else the
configured one) or a `bridgeUrl` in the trigger body, every accepted trigger is executed in
the background after its 201:
the workflow's steps are discovered (`GET ?action=discover`, cached), then each step is
POSTed to `?action=execute` per subscriber, signed with the secret key as Novu signs bridge
calls, with Novu's 5 s timeout and retries. A step answered with `options.skip` delivers
nothing; any other answer is recorded as a message. `stats.bridge` counts `calls` (HTTP
requests), `failures` (requests without a 2xx answer), `retries`, `discovers`, `executed`,
`skipped`, `delivered`, `errors` (steps or discoveries given up) and shows `lastError`.

Message webhooks (webhooks.py): with a webhook URL and secret (NOVU_EMULATOR_WEBHOOK_URL,
NOVU_EMULATOR_WEBHOOK_SECRET, `whsec_...`), every channel step the bridge answered (not
skipped) sends Novu's `message.sent` webhook, and one a `providerFailures` fault refuses sends
`message.failed`, in Novu's body shape, signed as Svix signs Novu's (svix-id, svix-timestamp,
svix-signature; Standard Webhooks), in the background, retried with the same svix-id.

Where the emulator is stricter or simpler than Novu (so that code passing here passes there):
- Deduplication: a repeated transactionId within 100 ms of the first runs again, whatever the
  load; Novu's window is however long its worker takes to store the first (usually shorter).
- Tenants: the emulator has none, so any `tenant` in a trigger gets `no_tenant_found`.
- Rate limits are enforced for every organisation, on the Free tier unless told otherwise;
  the refusal cache Novu keeps per API process is one cache here (Novu runs several
  processes, each of which may still look at the bucket).
- A sync with a `bridgeUrl` that is not an absolute http(s) URL is a permanent 400 (Novu
  fails with a 500 there); a bridge's 2xx that is not a JSON object with a `workflows` list
  fails the sync with 400 (Novu may store what it can read).
- Workflows a trigger names must be known: Novu also runs a workflow discovered on the fly
  from a trigger's own `bridgeUrl` in development environments; the emulator does not.
- The body-parser limits apply to any content type (Novu parses only JSON bodies).
- Only runs held in a delay step are cancellable: digests are not emulated.
- Recipients: a subscriberId or topicKey outside Novu's SUBSCRIBER_ID_REGEX (after trimming)
  is dropped from `to` (`stats.recipientsDropped`), and a trigger left with none is
  `invalid_recipients`; Novu only logs them while its dry-run flag is on.
- Webhooks: only `message.sent` and `message.failed` (no provider receipts, so no
  `message.delivered`; no Inbox, so no `seen`/`read`); tried 4 times in about 2.5 minutes
  (at once, then after 5 s, 30 s, 2 min) where Svix keeps trying for over a day; ids are
  random (`msg_` + 27 hex digits, `evt_`/`_id` as ObjectIds), not Svix's KSUIDs. A step whose
  bridge call fails sends none, as Novu has no message to report.
Contract tests (tests/contract) check the shared behaviour against a real Novu when
`NOVU_CONTRACT_SECRET_KEY` is set.

Fault configuration (`POST /_emulator/faults`; invalid -> 400 JSON):

    {
      "rules": [                       # status faults, on trigger and bulk calls only
        {"status": 500, "rate": 0.10},
        {"status": 429, "rate": 0.05, "retryAfter": 2},
        {"status": 400, "rate": 0.01, "message": "bad luck"},
        {"status": 500, "rate": 0.02, "sticky": true}
      ],
      "latencyMs": 200,                # delays every /v1 answer
      "latencySpikeRate": 0.1,         # and this fraction of them ...
      "latencySpikeMs": 200,           # ... this much more
      "dropRate": 0.02,                # close the connection before doing anything
      "dropAfterAcceptRate": 0.02,     # record the trigger(s), then close without answering
      "holdSeconds": 0,                # Novu's queue lag before steps run (not cancellable)
      "rateLimitPerSecond": null,      # replaces the Events tier's tokens/s while set
      "dedupeRaceWindowMs": null,      # replaces the deduplication race window while set
      "providerFailures": [            # a channel's provider refuses its messages (rate:
        {"channel": "email", "rate": 1.0, "message": "mailbox full"}   # default 1)
      ]
    }

One status rule may be given inline instead of `rules`:
`{"status": 500, "rate": 0.3, "retryAfter": 1}`. One random draw per request
picks at most one rule, so rates add up (their sum must be at most 1). `rate`
defaults to 1. A status fault answers a Novu-shaped error (header
`X-Emulator-Fault: status:<code>`) and records nothing; 429 always carries
`Retry-After` (1 s unless `retryAfter` is set), other statuses only when it is
set. A plain status fault happens in front of Novu's idempotency layer (like a
gateway error or the throttler), so nothing is remembered for the request's
Idempotency-Key; a `sticky` one happens inside Novu's handler, so Novu caches it
under the key and replays it to every retry with that key for 24 h.

A rule with `"scope": "transaction"` is drawn apart from the others, once per transactionId
the first time a single trigger carries it (rates of transaction-scoped rules add up to at
most 1 among themselves); a transactionId it picked gets that answer on every single trigger
that carries it, as a request Novu rejects for what it is would. When a request-scoped rule
also fires, that one answers. Bulk triggers and bodies without a transactionId are not
subject to transaction-scoped rules.
"""

from novu_emulator.faults import FaultConfig, StatusFault
from novu_emulator.server import EmulatorServer, RunningEmulator, serve, start_in_thread

__all__ = [
    "EmulatorServer",
    "FaultConfig",
    "RunningEmulator",
    "StatusFault",
    "serve",
    "start_in_thread",
]
