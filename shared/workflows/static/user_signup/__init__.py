"""user-signup: welcome a new user by email and in the app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from shared.db.enums import ChannelType
from shared.workflows.definition import ChannelContent, StaticWorkflow


class UserSignupPayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    userId: str = Field(min_length=1, max_length=255)
    email: EmailStr
    name: str = Field(min_length=1, max_length=255)


def _subscriber(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "subscriberId": str(payload["userId"]),
        "email": payload.get("email"),
        "firstName": payload.get("name"),
    }


workflow = StaticWorkflow(
    key="user-signup",
    name="User sign-up",
    description="Welcome email and in-app message for a new user.",
    tags=("onboarding",),
    payload_model=UserSignupPayload,
    subscriber=_subscriber,
    channels={
        ChannelType.EMAIL: ChannelContent(
            subject="Welcome to XNovu, {{ name }}!",
            body=(
                "<h1>Welcome, {{ name }}!</h1>"
                "<p>Your account {{ email }} is ready. We are glad to have you.</p>"
            ),
        ),
        ChannelType.IN_APP: ChannelContent(
            subject="Welcome!",
            body="Hi {{ name }}, your account is ready. Start by completing your profile.",
        ),
    },
)
