"""The baseline of benchmark (a): a bare FastAPI JSON POST, served like the XNovu API.

Validates a body shaped like a trigger with pydantic and answers 202 with a JSON object, with
no database, broker or authentication: what FastAPI + uvicorn cost on their own.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI(title="bare")


class BareTrigger(BaseModel):
    workflowId: str = Field(min_length=1, max_length=255)
    payload: dict[str, Any] = Field(default_factory=dict)


class BareAccepted(BaseModel):
    message: str
    workflowId: str
    notificationId: int
    transactionId: str
    status: str


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/bare", status_code=202, response_model=BareAccepted)
async def bare(body: BareTrigger) -> BareAccepted:
    return BareAccepted(
        message="Notification triggered successfully",
        workflowId=body.workflowId,
        notificationId=1,
        transactionId=f"xn-{uuid.uuid4()}",
        status="PENDING",
    )
