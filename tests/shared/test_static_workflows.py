"""The declarative API of static workflows, and the workflows that ship with XNovu."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from shared.db.enums import ChannelType
from shared.payloads import payload_errors
from shared.templates import RenderedContent, get_template_renderer
from shared.workflows.definition import (
    ChannelContent,
    ProblemCode,
    StaticWorkflow,
    WorkflowDefinitionError,
    chat,
    define_workflow,
    email,
    in_app,
    push,
    sms,
)

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}


class NamePayload(BaseModel):
    name: str


def render(
    channel: ChannelType, content: ChannelContent, variables: dict[str, Any]
) -> RenderedContent:
    """A static workflow's inline content, rendered as delivery renders it."""
    return get_template_renderer().render_source(
        channel, content.subject, content.body, variables, enterprise_id=None
    )


def codes(exc: pytest.ExceptionInfo[WorkflowDefinitionError]) -> list[ProblemCode]:
    return [problem.code for problem in exc.value.problems]


# -- the declarative API ----------------------------------------------------------------------


def test_helpers_build_each_channel_by_its_rules() -> None:
    assert email("Hi", "<p>Hello</p>") == (
        ChannelType.EMAIL,
        ChannelContent(body="<p>Hello</p>", subject="Hi"),
    )
    assert in_app("Hello") == (ChannelType.IN_APP, ChannelContent(body="Hello"))
    assert in_app("Hello", subject="Hey").content.subject == "Hey"
    assert sms("Code {{ code }}") == (ChannelType.SMS, ChannelContent(body="Code {{ code }}"))
    assert push("Title", "Body") == (
        ChannelType.PUSH,
        ChannelContent(body="Body", subject="Title"),
    )
    assert chat("Deployed") == (ChannelType.CHAT, ChannelContent(body="Deployed"))


def test_define_workflow_with_a_pydantic_payload() -> None:
    workflow = define_workflow(
        "order-shipped",
        email(subject="Shipped, {{ name }}", body="<p>On its way</p>"),
        push("Shipped", "Your order is on its way"),
        payload=NamePayload,
        subscriber=lambda p: {"subscriberId": p["name"]},
        name="Order shipped",
        description="Tells the customer",
        tags=["orders"],
    )
    assert workflow.key == "order-shipped"
    assert list(workflow.channels) == [ChannelType.EMAIL, ChannelType.PUSH]
    assert workflow.payload_model is NamePayload
    assert workflow.payload_schema is not None
    assert workflow.payload_schema["required"] == ["name"]
    assert workflow.tags == ("orders",)
    assert workflow.subscriber is not None
    assert workflow.subscriber({"name": "ada"}) == {"subscriberId": "ada"}


def test_define_workflow_with_a_json_schema_payload() -> None:
    workflow = define_workflow("weekly-digest", in_app("{{ name }}"), payload=SCHEMA)
    assert workflow.payload_model is None
    assert workflow.payload_schema == SCHEMA
    assert payload_errors(workflow.payload_schema, {}) == [
        {"field": "name", "message": "'name' is a required property"}
    ]


def test_static_workflow_accepts_channel_names_and_copies_the_mapping() -> None:
    channels: dict[Any, ChannelContent] = {"sms": ChannelContent(body="Hi")}
    workflow = StaticWorkflow(key="texts", channels=channels)
    channels["EMAIL"] = ChannelContent(body="later", subject="later")
    assert dict(workflow.channels) == {ChannelType.SMS: ChannelContent(body="Hi")}


@pytest.mark.parametrize(
    "key", ["User-Signup", "user_signup", "user--signup", "-signup", "signup-", "", "user signup"]
)
def test_key_must_be_kebab_case(key: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        define_workflow(key, sms("Hi"))
    assert codes(exc) == [ProblemCode.INVALID_KEY]
    assert "kebab-case" in str(exc.value)


def test_at_least_one_channel() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        define_workflow("empty")
    assert codes(exc) == [ProblemCode.NO_CHANNELS]


def test_unknown_channel_is_named() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        StaticWorkflow(key="faxes", channels={"FAX": ChannelContent(body="x")})  # type: ignore[dict-item]
    assert codes(exc) == [ProblemCode.BAD_CHANNEL]
    assert "'FAX'" in str(exc.value)


def test_channel_content_must_be_channel_content() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        StaticWorkflow(key="texts", channels={ChannelType.SMS: "Hi"})  # type: ignore[dict-item]
    assert codes(exc) == [ProblemCode.BAD_CONTENT]


def test_define_workflow_rejects_a_channel_given_twice() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        define_workflow("texts", sms("one"), sms("two"))
    assert codes(exc) == [ProblemCode.DUPLICATE_CHANNEL]


def test_define_workflow_rejects_raw_content_instead_of_a_helper() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        define_workflow("texts", ChannelContent(body="x"))  # type: ignore[arg-type]
    assert ProblemCode.BAD_CHANNEL in codes(exc)


def test_email_needs_a_subject_and_push_a_title() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        StaticWorkflow(
            key="alerts",
            channels={
                ChannelType.EMAIL: ChannelContent(body="<p>x</p>"),
                ChannelType.PUSH: ChannelContent(body="x", subject="  "),
            },
        )
    assert codes(exc) == [ProblemCode.MISSING_SUBJECT, ProblemCode.MISSING_SUBJECT]
    assert "EMAIL needs a subject" in str(exc.value)
    assert "PUSH needs a title" in str(exc.value)


def test_in_app_subject_is_optional_and_bodies_must_not_be_empty() -> None:
    assert define_workflow("notes", in_app("Hi")).channels[ChannelType.IN_APP].subject is None
    with pytest.raises(WorkflowDefinitionError) as exc:
        define_workflow("notes", in_app("   "))
    assert codes(exc) == [ProblemCode.BAD_CONTENT]


def test_jinja_syntax_is_checked_in_bodies_and_subjects() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        define_workflow(
            "broken",
            email(subject="Hi {{ name", body="<p>fine</p>\n{% if x %}never closed"),
        )
    assert codes(exc) == [ProblemCode.JINJA_SYNTAX, ProblemCode.JINJA_SYNTAX]
    messages = [problem.message for problem in exc.value.problems]
    assert messages[0].startswith("EMAIL body: Jinja syntax error on line 2")
    assert messages[1].startswith("EMAIL subject: Jinja syntax error on line 1")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        define_workflow(
            "Bad Key",
            email(subject="", body="{{ }}"),
            payload={"type": "strng"},
            tags="security",
        )
    assert set(codes(exc)) == {
        ProblemCode.INVALID_KEY,
        ProblemCode.MISSING_SUBJECT,
        ProblemCode.JINJA_SYNTAX,
        ProblemCode.BAD_PAYLOAD_SCHEMA,
        ProblemCode.BAD_TAGS,
    }
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"payload_model": NamePayload, "payload_json_schema": SCHEMA}, "not both"),
        ({"payload_json_schema": {"type": "strng"}}, "not a valid JSON Schema"),
        ({"payload_json_schema": {"type": "array"}}, "must describe an object"),
        ({"payload_model": dict}, "pydantic model class"),
    ],
)
def test_payload_schema_is_checked(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        StaticWorkflow(key="texts", channels=dict([sms("Hi")]), **kwargs)
    assert codes(exc) == [ProblemCode.BAD_PAYLOAD_SCHEMA]
    assert fragment in str(exc.value)


def test_define_workflow_rejects_a_payload_that_is_neither_model_nor_schema() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        define_workflow("texts", sms("Hi"), payload="name: str")  # type: ignore[arg-type]
    assert codes(exc) == [ProblemCode.BAD_PAYLOAD_SCHEMA]


def test_subscriber_must_be_callable() -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        StaticWorkflow(
            key="texts",
            channels=dict([sms("Hi")]),
            subscriber={"subscriberId": "x"},  # type: ignore[arg-type]
        )
    assert codes(exc) == [ProblemCode.BAD_SUBSCRIBER]


# -- the workflows that ship with XNovu --------------------------------------------------------

RESET = {
    "userId": "u-1",
    "email": "ada@example.com",
    "resetUrl": "https://app.example.com/reset?token=abc&u=1",
    "expiresInMinutes": 30,
}


def test_password_reset_renders_email_and_sms() -> None:
    from shared.workflows.static.password_reset import workflow

    assert workflow.key == "password-reset"
    assert list(workflow.channels) == [ChannelType.EMAIL, ChannelType.SMS]
    mail = render(ChannelType.EMAIL, workflow.channels[ChannelType.EMAIL], RESET)
    assert mail.subject == "Reset your XNovu password"
    assert 'href="https://app.example.com/reset?token=abc&amp;u=1"' in mail.body
    assert "expires in 30 minutes" in mail.body
    text = render(ChannelType.SMS, workflow.channels[ChannelType.SMS], RESET)
    assert "https://app.example.com/reset?token=abc&u=1" in text.body
    assert "(expires in 30 minutes)" in text.body
    one_minute = {**RESET, "expiresInMinutes": 1}
    two_hours = {**RESET, "expiresInMinutes": 120}
    sms_content = workflow.channels[ChannelType.SMS]
    assert "1 minute)" in render(ChannelType.SMS, sms_content, one_minute).body
    assert "2 hours)" in render(ChannelType.SMS, sms_content, two_hours).body


def test_password_reset_payload_schema() -> None:
    from shared.workflows.static.password_reset import workflow

    schema = workflow.payload_schema
    assert payload_errors(schema, RESET) == []
    assert payload_errors(schema, {**RESET, "phone": "+447700900123"}) == []
    fields = {e["field"] for e in payload_errors(schema, {**RESET, "phone": "0770 090"})}
    assert fields == {"phone"}
    # A javascript: URL would run from the email's link.
    fields = {e["field"] for e in payload_errors(schema, {**RESET, "resetUrl": "javascript:x"})}
    assert fields == {"resetUrl"}
    missing = {e["field"] for e in payload_errors(schema, {"userId": "u-1"})}
    assert missing == {"email", "resetUrl", "expiresInMinutes"}


def test_password_reset_subscriber_carries_the_phone_only_when_given() -> None:
    from shared.workflows.static.password_reset import workflow

    assert workflow.subscriber is not None
    assert workflow.subscriber(RESET) == {"subscriberId": "u-1", "email": "ada@example.com"}
    with_phone = workflow.subscriber({**RESET, "phone": "+447700900123"})
    assert with_phone is not None
    assert with_phone["phone"] == "+447700900123"


def test_user_signup_renders() -> None:
    from shared.workflows.static.user_signup import workflow

    payload = {"userId": "u-1", "email": "ada@example.com", "name": "<Ada>"}
    mail = render(ChannelType.EMAIL, workflow.channels[ChannelType.EMAIL], payload)
    assert mail.subject == "Welcome to XNovu, <Ada>!"
    assert "Welcome, &lt;Ada&gt;!" in mail.body
