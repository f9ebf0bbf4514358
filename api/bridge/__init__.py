"""The Novu Framework bridge, in Python: what Novu calls at `/api/novu`.

Novu's workers do not render anything for a code-first workflow: for each step they POST
`?action=execute&workflowId=W&stepId=S` to the bridge and deliver what it answers. XNovu renders
every channel before it triggers Novu, so `execute` mostly hands back the content carried in
the trigger payload (`payload._xnovu.rendered[stepId]`, see shared/notifications/novu_trigger.py).

- protocol.py: actions, error codes, headers and versions of the protocol.
- schemas.py: the JSON Schemas a step declares (controls, outputs, results per step type).
- signature.py: the `novu-signature` HMAC check (and the signing Novu does, for tests).
- errors.py: the `{message, code, data?}` errors of the protocol.
- catalog.py: `discover` and `health-check`: every static workflow and dynamic workflow key.
- execute.py: `execute` and `preview` of one step.

The shapes were checked field by field against @novu/framework 2.13.2 serving a workflow with
email, in_app, sms and push steps (see docs in each module).
"""
