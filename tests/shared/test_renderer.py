"""TemplateRenderer: channel rules, escaping, defaults, nesting, the cache and syntax checks.

Templates are real rows, created through TemplateService in the test PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import update

from shared.db.enums import ChannelType, PublishStatus
from shared.db.models import NotificationTemplate
from shared.db.session import transaction
from shared.settings import Settings
from shared.templates import (
    RenderError,
    RenderLimitExceeded,
    TemplateNotFound,
    TemplateRenderer,
    get_template_renderer,
    validate_template_source,
    variable_defaults,
)
from shared.templates.cache import TemplateCache
from shared.templates.service import NewTemplate, TemplateService
from shared.workflows.definition import ChannelContent

EMAIL, IN_APP, SMS, PUSH, CHAT = (
    ChannelType.EMAIL,
    ChannelType.IN_APP,
    ChannelType.SMS,
    ChannelType.PUSH,
    ChannelType.CHAT,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**changes: Any) -> Settings:
    return Settings().model_copy(update=changes)


def create(
    enterprise_id: uuid.UUID, key: str, channel: ChannelType, body: str, **extra: Any
) -> int:
    """A PUBLISH template (only published ones are rendered at send time)."""
    data = NewTemplate(template_key=key, channel_type=channel, body_template=body, **extra)
    with transaction() as session:
        service = TemplateService(session)
        template_id = service.create_template(enterprise_id, data).id
        service.publish_template(template_id, enterprise_id)
        return template_id


def edit(enterprise_id: uuid.UUID, template_id: int, **changes: Any) -> None:
    with transaction() as session:
        TemplateService(session).update_template(template_id, enterprise_id, changes)


@pytest.fixture()
def ent(stack: Any) -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture()
def renderer(stack: Any) -> TemplateRenderer:
    return TemplateRenderer(settings())


# -- channel rules and escaping -------------------------------------------------------------


def test_email_subject_is_plain_text_and_body_is_html_escaped(ent, renderer):
    tid = create(ent, "welcome", EMAIL, "<p>Hi {{ name }}</p>", subject_template="Hi {{ name }}")
    out = renderer.render_template(tid, ent, {"name": "<Ada & Bob>"})
    assert out.subject == "Hi <Ada & Bob>"
    assert out.body == "<p>Hi &lt;Ada &amp; Bob&gt;</p>"
    assert out.as_dict() == {"subject": out.subject, "body": out.body}


def test_in_app_subject_is_optional(ent, renderer):
    tid = create(ent, "note", IN_APP, "{{ text }}")
    out = renderer.render_template(tid, ent, {"text": "<b>x</b>"})
    assert out.subject is None
    assert out.body == "&lt;b&gt;x&lt;/b&gt;"
    assert out.as_dict() == {"body": out.body}


def test_sms_and_chat_ignore_the_subject_and_do_not_escape(ent, renderer):
    sms = create(ent, "sms", SMS, "Code <{{ code }}>", subject_template="ignored {{ code }}")
    chat = create(ent, "chat", CHAT, "*{{ code }}* & more")
    assert renderer.render_template(sms, ent, {"code": 42}).as_dict() == {"body": "Code <42>"}
    assert renderer.render_template(chat, ent, {"code": 7}).as_dict() == {"body": "*7* & more"}


def test_push_uses_the_subject_as_title_unescaped(ent, renderer):
    tid = create(ent, "push", PUSH, "{{ a }} & {{ b }}", subject_template="<{{ a }}>")
    out = renderer.render_template(tid, ent, {"a": "x<y", "b": "z"})
    assert out.subject == "<x<y>"
    assert out.body == "x<y & z"


def test_email_with_blank_subject_fails(renderer):
    with pytest.raises(RenderError, match="non-empty subject"):
        renderer.render_source(EMAIL, "{{ s }}", "body", {"s": "  "}, enterprise_id=None)
    with pytest.raises(RenderError, match="non-empty subject"):
        renderer.render_source(EMAIL, None, "body", {}, enterprise_id=None)


def test_subject_is_one_line(renderer):
    out = renderer.render_source(PUSH, "a\n{{ b }}\r\nc", "x", {"b": "B"}, enterprise_id=None)
    assert out.subject == "a B c"


def test_none_prints_empty_and_undefined_fails_naming_the_variable(renderer):
    out = renderer.render_source(SMS, None, "[{{ x }}]", {"x": None}, enterprise_id=None)
    assert out.body == "[]"
    with pytest.raises(RenderError, match="'missing' is undefined"):
        renderer.render_source(SMS, None, "{{ missing }}", {}, enterprise_id=None)


def test_inline_channel_content_renders_by_its_channels_rules():
    content = ChannelContent(body="<i>{{ n }}</i>", subject="S {{ n }}")
    out = get_template_renderer().render_source(
        EMAIL, content.subject, content.body, {"n": "&"}, enterprise_id=None
    )
    assert out.as_dict() == {"subject": "S &", "body": "<i>&amp;</i>"}


# -- variables_description ---------------------------------------------------------------


def test_variable_defaults_accept_both_forms():
    description = {
        "plain": "p",
        "described": {"default": 3, "description": "a number"},
        "documented_only": {"description": "caller must pass it", "type": "string"},
        "no_default": None,
        "dict_default": {"city": "Paris"},
        "explicit_dict": {"default": {"description": "not a spec"}},
    }
    assert variable_defaults(description) == {
        "plain": "p",
        "described": 3,
        "dict_default": {"city": "Paris"},
        "explicit_dict": {"description": "not a spec"},
    }
    assert variable_defaults(None) == {}
    assert variable_defaults(["not", "a", "mapping"]) == {}


def test_defaults_apply_and_variables_override_them(ent, renderer):
    tid = create(
        ent,
        "greet",
        SMS,
        "{{ greeting }}, {{ name }} ({{ city.name }})",
        variables_description={
            "greeting": "Hello",
            "name": {"default": "there", "description": "who"},
            "city": {"name": "Paris"},
        },
    )
    assert renderer.render_template(tid, ent, {}).body == "Hello, there (Paris)"
    assert renderer.render_template(tid, ent, {"name": "Ada"}).body == "Hello, Ada (Paris)"


# -- scoping and usability -----------------------------------------------------------------


def test_another_enterprises_template_is_not_found(ent, renderer):
    tid = create(ent, "mine", SMS, "secret")
    other = uuid.uuid4()
    with pytest.raises(TemplateNotFound):
        renderer.render_template(tid, other, {})
    with pytest.raises(TemplateNotFound):
        renderer.render_template_by_key("mine", other, {})
    assert renderer.render_template(tid, ent, {}).body == "secret"


@pytest.mark.parametrize(
    "change",
    [
        {"deactivated": True},
        {"publish_status": PublishStatus.DELETED},
        {"publish_status": PublishStatus.DISCARD},
    ],
)
def test_deactivated_deleted_and_discarded_templates_are_not_found(ent, renderer, change):
    tid = create(ent, "gone", SMS, "x")
    with transaction() as session:
        session.execute(
            update(NotificationTemplate).where(NotificationTemplate.id == tid).values(**change)
        )
    with pytest.raises(TemplateNotFound, match="not found"):
        renderer.render_template(tid, ent, {})


def test_render_by_key_and_unknown_ids(ent, renderer):
    create(ent, "by-key", SMS, "k={{ v }}")
    assert renderer.render_template_by_key("by-key", ent, {"v": 1}).body == "k=1"
    for missing in (0, -5, 2**63, 10**30):
        with pytest.raises(TemplateNotFound):
            renderer.render_template(missing, ent, {})


def test_a_broken_row_is_a_render_error_with_its_line(ent, renderer):
    tid = create(ent, "broken", SMS, "fine")
    with transaction() as session:  # bypassing the service's syntax check, as old rows might
        session.execute(
            update(NotificationTemplate)
            .where(NotificationTemplate.id == tid)
            .values(body_template="a\nb\n{{ oops(")
        )
    with pytest.raises(RenderError, match=r"template 'broken' body_template line 3"):
        renderer.render_template(tid, ent, {})


# -- nesting --------------------------------------------------------------------------------


def test_nested_html_is_escaped_once_and_sees_only_what_it_is_given(ent, renderer):
    create(
        ent,
        "footer",
        SMS,
        "<hr>{{ who }} {{ tag }}{% if name is defined %}LEAK{% endif %}",
        variables_description={"tag": "<t>"},
    )
    tid = create(
        ent,
        "mail",
        EMAIL,
        "<p>{{ name }}</p>{{ xnovu_render('footer', {'who': name}) }}",
        subject_template="S {{ xnovu_render('footer', who=name) }}",
    )
    out = renderer.render_template(tid, ent, {"name": "<Ada>"})
    assert out.body == "<p>&lt;Ada&gt;</p><hr>&lt;Ada&gt; &lt;t&gt;"
    assert out.subject == "S <hr><Ada> <t>"


def test_nested_cycle_is_refused_and_named(ent, renderer):
    create(ent, "a", SMS, "A{{ xnovu_render('b') }}")
    create(ent, "b", SMS, "B{{ xnovu_render('a') }}")
    with pytest.raises(RenderError, match=r"template cycle: a -> b -> a"):
        renderer.render_template_by_key("a", ent, {})
    create(ent, "self", SMS, "{{ xnovu_render('self') }}")
    with pytest.raises(RenderError, match=r"template cycle: self -> self"):
        renderer.render_template_by_key("self", ent, {})


def test_the_same_template_may_be_nested_twice_side_by_side(ent, renderer):
    create(ent, "dot", SMS, ".")
    create(ent, "dots", SMS, "{{ xnovu_render('dot') }}{{ xnovu_render('dot') }}")
    assert renderer.render_template_by_key("dots", ent, {}).body == ".."


def test_nesting_deeper_than_the_limit_fails(ent):
    renderer = TemplateRenderer(settings(template_max_depth=2))
    create(ent, "l3", SMS, "3")
    create(ent, "l2", SMS, "2{{ xnovu_render('l3') }}")
    create(ent, "l1", SMS, "1{{ xnovu_render('l2') }}")
    create(ent, "l0", SMS, "0{{ xnovu_render('l1') }}")
    assert renderer.render_template_by_key("l1", ent, {}).body == "123"
    with pytest.raises(RenderLimitExceeded, match=r"more than 2 levels deep: l0 -> l1 -> l2 -> l3"):
        renderer.render_template_by_key("l0", ent, {})


def test_nested_missing_or_foreign_template_fails_the_render(ent, renderer):
    other = uuid.uuid4()
    create(other, "theirs", SMS, "their secret")
    tid = create(ent, "outer", SMS, "{{ xnovu_render('theirs') }}")
    with pytest.raises(RenderError, match="xnovu_render: template 'theirs' not found") as info:
        renderer.render_template(tid, ent, {})
    # The outer template exists: a broken reference fails, it does not fall back.
    assert not isinstance(info.value, TemplateNotFound)


def test_xnovu_render_needs_an_enterprise(renderer):
    with pytest.raises(RenderError, match="only available when rendering for an enterprise"):
        renderer.render_source(SMS, None, "{{ xnovu_render('x') }}", {}, enterprise_id=None)


def test_preview_of_a_saved_source_detects_self_cycles(ent, renderer):
    create(ent, "loop", SMS, "{{ xnovu_render('loop') }}")
    with pytest.raises(RenderError, match="template cycle: loop -> loop"):
        renderer.render_source(
            SMS, None, "{{ xnovu_render('loop') }}", {}, enterprise_id=ent, template_key="loop"
        )


# -- the cache ------------------------------------------------------------------------------


def test_second_render_is_a_hit_and_stats_count_per_enterprise(ent, renderer):
    tid = create(ent, "cached", SMS, "v={{ v }}")
    renderer.render_template(tid, ent, {"v": 1})
    renderer.render_template(tid, ent, {"v": 2})
    renderer.render_template_by_key("cached", ent, {"v": 3})
    stats = renderer.get_cache_stats()
    assert (stats["hits"], stats["misses"], stats["size"]) == (2, 1, 1)
    assert stats["enterprises"] == {str(ent): 1}
    assert stats["ttlSeconds"] == renderer.settings.template_cache_ttl_seconds
    assert {"expirations", "evictions", "invalidations", "maxEntries"} <= set(stats)


def test_entries_expire_after_the_ttl(ent, stack):
    clock = Clock()
    ttl = settings(template_cache_ttl_seconds=60, registry_check_interval_seconds=5)
    renderer = TemplateRenderer(ttl, cache=TemplateCache(ttl, clock=clock))
    tid = create(ent, "ttl", SMS, "old")
    assert renderer.render_template(tid, ent, {}).body == "old"
    with transaction() as session:  # a change that does not bump the generation
        session.execute(
            update(NotificationTemplate)
            .where(NotificationTemplate.id == tid)
            .values(body_template="new")
        )
    clock.now += 59
    assert renderer.render_template(tid, ent, {}).body == "old"
    clock.now += 2
    assert renderer.render_template(tid, ent, {}).body == "new"
    assert renderer.get_cache_stats()["expirations"] == 1


def test_an_edit_elsewhere_reaches_the_cache_through_the_generation(ent, stack):
    clock = Clock()
    checked = settings(registry_check_interval_seconds=2)
    renderer = TemplateRenderer(checked, cache=TemplateCache(checked, clock=clock))
    tid = create(ent, "gen", SMS, "v1")
    assert renderer.render_template(tid, ent, {}).body == "v1"
    edit(ent, tid, body_template="v2")  # what another process's API does: bumps the generation
    clock.now += 1
    assert renderer.render_template(tid, ent, {}).body == "v1"  # not checked yet
    clock.now += 1.5
    assert renderer.render_template(tid, ent, {}).body == "v2"
    assert renderer.get_cache_stats()["invalidations"] >= 1


def test_invalidation(ent, renderer):
    a = create(ent, "inv-a", SMS, "a1")
    b = create(ent, "inv-b", SMS, "b1")
    renderer.render_template(a, ent, {})
    renderer.render_template(b, ent, {})
    with transaction() as session:
        session.execute(
            update(NotificationTemplate)
            .where(NotificationTemplate.id.in_([a, b]))
            .values(body_template="changed")
        )
    assert renderer.invalidate_template(ent, a) is True
    assert renderer.invalidate_template(ent, a) is False
    assert renderer.render_template(a, ent, {}).body == "changed"
    assert renderer.render_template(b, ent, {}).body == "b1"
    assert renderer.invalidate_enterprise(ent) == 2
    assert renderer.render_template(b, ent, {}).body == "changed"


def test_a_renamed_template_is_not_found_under_its_old_key(ent, renderer):
    tid = create(ent, "old-name", SMS, "x")
    renderer.render_template_by_key("old-name", ent, {})
    edit(ent, tid, template_key="new-name")
    renderer.invalidate_template(ent, tid)
    renderer.render_template(tid, ent, {})  # cached again, under its new key
    with pytest.raises(TemplateNotFound):
        renderer.render_template_by_key("old-name", ent, {})
    assert renderer.render_template_by_key("new-name", ent, {}).body == "x"


def test_ttl_zero_turns_the_cache_off_and_lru_evicts(ent, stack):
    off = TemplateRenderer(settings(template_cache_ttl_seconds=0))
    tid = create(ent, "nocache", SMS, "x")
    off.render_template(tid, ent, {})
    off.render_template(tid, ent, {})
    assert (off.get_cache_stats()["size"], off.get_cache_stats()["misses"]) == (0, 2)

    small = TemplateRenderer(settings(), cache=TemplateCache(settings(), max_entries=1))
    other = create(ent, "other", SMS, "y")
    small.render_template(tid, ent, {})
    small.render_template(other, ent, {})
    stats = small.get_cache_stats()
    assert (stats["size"], stats["evictions"]) == (1, 1)


def test_concurrent_renders_share_the_cache_safely(ent, renderer):
    tid = create(ent, "threads", SMS, "{{ n }}")
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(20):
                results[n] = renderer.render_template(tid, ent, {"n": n}).body
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {n: str(n) for n in range(8)}
    stats = renderer.get_cache_stats()
    assert stats["hits"] + stats["misses"] == 160
    assert stats["size"] == 1


# -- limits ---------------------------------------------------------------------------------


def test_output_over_the_limit_is_stopped(stack):
    renderer = TemplateRenderer(settings(template_max_output_bytes=2048))
    src = "{% for i in range(1000) %}{{ s }}{% endfor %}"
    with pytest.raises(RenderLimitExceeded, match="renders more than 2048 bytes"):
        renderer.render_source(SMS, None, src, {"s": "é" * 3}, enterprise_id=None)
    out = renderer.render_source(SMS, None, src, {"s": "é"}, enterprise_id=None)
    assert len(out.body.encode()) == 2000


def test_a_silent_loop_is_stopped_by_the_timeout(stack):
    renderer = TemplateRenderer(settings(template_render_timeout_seconds=0.3))
    src = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    with pytest.raises(RenderLimitExceeded, match=r"longer than 0\.3 s"):
        renderer.render_source(SMS, None, src, {}, enterprise_id=None)


# -- syntax validation ----------------------------------------------------------------------


def test_validation_reports_fields_and_lines():
    assert validate_template_source("Hi {{ name }}", "<p>{{ body }}</p>") == []
    errors = validate_template_source("Hi {{ name", "line 1\nline 2\n{{ oops( }}\nline 4")
    assert [(e["field"], e["line"]) for e in errors] == [
        ("subject_template", 1),
        ("body_template", 3),
    ]
    assert all(e["message"] for e in errors)
    [load] = validate_template_source(None, "ok\n{% include 'other' %}")
    assert (load["field"], load["line"]) == ("body_template", 2)
    assert "xnovu_render" in load["message"]
