"""password-reset: send a password-reset link by email, and by SMS when a phone is known."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from shared.workflows.definition import define_workflow, email, sms


class PasswordResetPayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    userId: str = Field(min_length=1, max_length=255)
    email: EmailStr
    # E.164, the form SMS providers expect.
    phone: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{6,14}$")
    # http(s) only: the link lands in an href, where a javascript: URL would run.
    resetUrl: str = Field(pattern=r"^https?://\S+$", max_length=2048)
    expiresInMinutes: int = Field(ge=1, le=10080)


def _subscriber(payload: Mapping[str, Any]) -> dict[str, Any]:
    subscriber = {"subscriberId": str(payload["userId"]), "email": payload.get("email")}
    if payload.get("phone"):
        subscriber["phone"] = payload["phone"]
    return subscriber


_EXPIRY = (
    "{% if expiresInMinutes >= 120 and expiresInMinutes % 60 == 0 %}"
    "{{ expiresInMinutes // 60 }} hours"
    "{% else %}{{ expiresInMinutes }} minute{{ '' if expiresInMinutes == 1 else 's' }}{% endif %}"
)

workflow = define_workflow(
    "password-reset",
    email(
        subject="Reset your XNovu password",
        body=(
            "<p>Hello,</p>"
            "<p>We received a request to reset the password of the account {{ email }}.</p>"
            '<p><a href="{{ resetUrl }}">Choose a new password</a></p>'
            f"<p>This link expires in {_EXPIRY} and can be used once.</p>"
            "<p>If you did not ask for this, ignore this email: your password stays as it is."
            " Never share this link with anyone.</p>"
        ),
    ),
    sms(
        "XNovu: reset your password at {{ resetUrl }} (expires in "
        + _EXPIRY
        + "). Didn't ask for it? Ignore this message."
    ),
    payload=PasswordResetPayload,
    subscriber=_subscriber,
    name="Password reset",
    description="A password-reset link by email, and by SMS when the payload has a phone.",
    tags=("security", "account"),
)
