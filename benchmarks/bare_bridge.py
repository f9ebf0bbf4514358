"""The fallback reference of benchmarks/bridge_bench.py when Node is missing: a bare route.

A Starlette route answering `execute` with the same JSON as the bridge (the email content
carried in the payload), with no signature check, schema or catalog: what the web stack costs
on its own.
"""

from __future__ import annotations

import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def execute(request: Request) -> JSONResponse:
    """The email step's answer, from `payload._xnovu.rendered.email`."""
    started = time.perf_counter()
    event = json.loads(await request.body())
    email = event["payload"]["_xnovu"]["rendered"]["email"]
    return JSONResponse(
        {
            "outputs": {"subject": email["subject"], "body": email["body"]},
            "providers": {},
            "options": {"skip": False},
            "metadata": {
                "status": "success",
                "error": False,
                "duration": (time.perf_counter() - started) * 1000,
            },
        }
    )


async def healthz(_request: Request) -> JSONResponse:
    """Ready."""
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/api/novu", execute, methods=["POST"]), Route("/healthz", healthz)])
