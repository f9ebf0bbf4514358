"""Templates of the original XNovu: its `{% xnovu_render %}` tag and filters, the undefined
mode, locale variants, published-only sends and rendered overrides (issue 14).

The expected outputs of the filters and the tag are the original's, as its template guide
(docs/template-engine-guide.md) and its tests (__tests__/unit/template/LiquidFilters) give them.
Templates are real rows in the test PostgreSQL."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import pytest

from shared.db.enums import ChannelType
from shared.db.session import transaction
from shared.settings import Settings
from shared.templates import RenderError, RenderLimitExceeded, TemplateRenderer
from shared.templates.cache import choose_variant, locale_chain, usable_locale
from shared.templates.errors import RenderMemoryExceeded, TemplateNotPublished
from shared.templates.filters import MARKDOWN_WORK_FACTOR, MAX_SANITIZED_TAGS
from shared.templates.service import InvalidTemplate, NewTemplate, TemplateService

EMAIL, IN_APP, SMS = ChannelType.EMAIL, ChannelType.IN_APP, ChannelType.SMS


def create(
    enterprise_id: uuid.UUID,
    key: str,
    channel: ChannelType,
    body: str,
    *,
    publish: bool = True,
    **extra: Any,
) -> int:
    data = NewTemplate(template_key=key, channel_type=channel, body_template=body, **extra)
    with transaction() as session:
        service = TemplateService(session)
        template_id = service.create_template(enterprise_id, data).id
        if publish:
            service.publish_template(template_id, enterprise_id)
        return template_id


@pytest.fixture()
def ent(stack: Any) -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture()
def renderer(stack: Any) -> TemplateRenderer:
    return TemplateRenderer(Settings())


def sms(renderer: TemplateRenderer, source: str, **variables: Any) -> str:
    """`source` rendered as plain text (an SMS body)."""
    return renderer.render_source(SMS, None, source, variables, enterprise_id=None).body


def html(renderer: TemplateRenderer, source: str, **variables: Any) -> str:
    """`source` rendered as an HTML body (IN_APP, autoescaped)."""
    return renderer.render_source(IN_APP, None, source, variables, enterprise_id=None).body


# -- the original's filters ---------------------------------------------------------------


def test_html_to_text_as_the_original_documents(renderer):
    source = "{{ content | html_to_text }}"
    assert sms(renderer, source, content="<h1>Hello</h1><p>World</p>") == "Hello\n\nWorld"
    assert (
        sms(renderer, source, content="<h1>Hello</h1><p>This is a <strong>test</strong></p>")
        == "Hello\n\nThis is a test"
    )
    link = '<a href="https://example.com">Click here</a>'
    assert sms(renderer, source, content=link) == "Click here (https://example.com)"
    entities = "&lt;test&gt; &amp; &quot;quotes&quot;"
    assert sms(renderer, source, content=entities) == '<test> & "quotes"'
    hidden = "<style>p{}</style><script>alert(1)</script><p>a</p><br><br><br><p>b</p>"
    assert sms(renderer, source, content=hidden) == "a\n\nb"
    # In an HTML body its text is escaped like any other value.
    assert html(renderer, source, content="&lt;b&gt;") == "&lt;b&gt;"


def test_markdown_to_html_as_the_original_documents(renderer):
    source = "{{ content | markdown_to_html }}"
    out = html(renderer, source, content="# Hello\n\n**Bold** text")
    assert out == "<h1>Hello</h1>\n<p><strong>Bold</strong> text</p>"
    out = html(renderer, source, content="# Header 1\n## Header 2\nThis is **bold** and *italic*")
    assert "<h1>Header 1</h1>" in out and "<h2>Header 2</h2>" in out
    assert "<strong>bold</strong>" in out and "<em>italic</em>" in out
    out = html(renderer, source, content="[Click here](https://example.com)")
    assert '<a href="https://example.com">Click here</a>' in out
    # Raw HTML and javascript: links in the markdown never reach the output as markup.
    out = html(renderer, source, content='<script>alert("x")</script> [x](javascript:alert(1))')
    assert "<script>" not in out and "&lt;script&gt;" in out and "href" not in out


def test_sanitizers_as_the_original_documents(renderer):
    email = html(
        renderer,
        "{{ content | sanitize_email }}",
        content='<script>alert("xss")</script><p>Safe content</p><iframe src="x"></iframe>'
        '<a href="https://e.com" onclick="x()">e</a><a href="javascript:alert(1)">j</a>'
        '<img src="data:image/png;base64,AA" style="width:1px">'
        '<p style="width: expression(alert(1))">css</p>',
    )
    assert "<script" not in email and "alert" not in email and "<iframe" not in email
    assert "<p>Safe content</p>" in email
    assert '<a href="https://e.com" target="_blank" rel="noopener noreferrer">e</a>' in email
    assert "javascript" not in email and "onclick" not in email
    assert '<img src="data:image/png;base64,AA" style="width:1px">' in email
    assert "expression" not in email and "<p>css</p>" in email

    inapp = html(
        renderer,
        "{{ content | sanitize_inapp }}",
        content='<p style="color: red;">Text</p><iframe src="evil"></iframe><h1>big</h1>'
        '<a href="https://e.com">e</a>',
    )
    assert inapp.startswith("<p>Text</p>") and "<iframe" not in inapp and "<h1>" not in inapp
    assert 'data-external-link="true"' in inapp and 'target="_blank"' in inapp

    assert sms(renderer, "{{ c | sanitize_sms }}", c="<h1>Title</h1><p>Message</p>") == (
        "TitleMessage"
    )
    stripped = sms(renderer, "{{ c | strip_html }}", c="<p>Hello <strong>world</strong>!</p>")
    assert stripped == "Hello world!"
    assert sms(renderer, "{{ c | strip_html }}", c="a &amp; b<script>x</script>") == "a & b"


def test_json_and_extract_subject_as_the_original_documents(renderer):
    data = {"name": "John", "age": 30}
    assert sms(renderer, "{{ data | json }}", data=data) == '{"name":"John","age":30}'
    # In HTML, markup characters are \\u escapes: safe inside a <script>, never escaped twice.
    assert html(renderer, "{{ d | json }}", d={"a": "</script>"}) == '{"a":"\\u003c/script\\u003e"}'
    source = (
        "{% set data = content | extract_subject %}"
        "Subject: {{ data.subject }}, Body: {{ data.body }}"
    )
    assert sms(renderer, source, content="Subject: Test Email\nThis is the body") == (
        "Subject: Test Email, Body: This is the body"
    )
    assert sms(renderer, source, content="This is just body content") == (
        "Subject: , Body: This is just body content"
    )


def test_filter_chains_as_the_original_documents(renderer):
    content = '# Title\n\n**Bold** text with <script>alert("xss")</script>'
    out = html(renderer, "{{ c | markdown_to_html | sanitize_email }}", c=content)
    assert "<h1>Title</h1>" in out and "<strong>Bold</strong>" in out and "<script>" not in out
    out = sms(renderer, "{{ c | markdown_to_html | html_to_text }}", c="# Title\n\n**Bold** text")
    assert out == "Title\n\nBold text"


# -- hostile input to the filters ----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value", "error"),
    [
        # Longer than the render's memory budget lets its parser build.
        ("{{ c | markdown_to_html }}", "|a|b|\n" * 5_000, RenderMemoryExceeded),
        ("{{ c | sanitize_email }}", "<b>" * 40_000, RenderMemoryExceeded),
        ("{{ c | html_to_text }}", "<p>" * 300_000, RenderMemoryExceeded),
        # Nested blocks Ammonia's parser would spend quadratic time on.
        ("{{ c | sanitize_inapp }}", "<div>" * (MAX_SANITIZED_TAGS + 1), RenderLimitExceeded),
        ("{{ c | strip_html }}", "<div>" * (MAX_SANITIZED_TAGS + 1), RenderLimitExceeded),
        # Over the output limit.
        ("{{ c | json }}", ["x" * 1000] * 2000, RenderLimitExceeded),
    ],
)
def test_hostile_filter_input_fails_the_render_alone(renderer, source, value, error):
    with pytest.raises(error):
        sms(renderer, source, c=value)


def test_a_slow_markdown_is_stopped_by_the_render_timeout(stack):
    # Within the memory budget, but more than a millisecond of parsing: the deadline checks
    # inside the parser stop it.
    renderer = TemplateRenderer(
        Settings().model_copy(
            update={"template_render_timeout_seconds": 0.001, "template_max_memory_bytes": 2**30}
        )
    )
    with pytest.raises(RenderLimitExceeded, match="timed out"):
        sms(renderer, "{{ c | markdown_to_html }}", c="* a\n" * 20_000)


def test_markdown_that_fits_the_budget_renders(renderer):
    budget = Settings().template_max_memory_bytes
    content = "* item\n" * (budget // MARKDOWN_WORK_FACTOR // 8)
    assert html(renderer, "{{ c | markdown_to_html }}", c=content).count("<li>") == len(
        content.splitlines()
    )


# -- the tag form ------------------------------------------------------------------------


def test_the_tag_form_as_the_original_documents(ent, renderer):
    create(ent, "email-header", SMS, "<h1>{{ companyName }}</h1><img src='{{ logoUrl }}'>")
    create(ent, "email-footer", SMS, "<p>{{ unsubscribeUrl }} {{ company.name }}</p>")
    tid = create(
        ent,
        "welcome",
        EMAIL,
        '{% xnovu_render "email-header",\n'
        "  companyName: company.name,\n"
        "  logoUrl: company.logoUrl\n"
        "%}<p>Hi {{ user.name }}</p>"
        '{% if includeFooter %}{% xnovu_render "email-footer", unsubscribeUrl: url %}{% endif %}',
        subject_template=(
            'Welcome {% xnovu_render "email-header" companyName: "<X>", logoUrl: "" %}'
        ),
    )
    out = renderer.render_template(
        tid,
        ent,
        {
            "company": {"name": "A&B", "logoUrl": "https://l/x.png"},
            "user": {"name": "<Ada>"},
            "includeFooter": True,
            "url": "https://u",
        },
    )
    # Escaped once in the HTML body; the footer sees the caller's `company` (as the
    # original's tag did) besides what the tag gives it.
    assert out.body == (
        "<h1>A&amp;B</h1><img src='https://l/x.png'><p>Hi &lt;Ada&gt;</p><p>https://u A&amp;B</p>"
    )
    # In the plain-text subject nothing is escaped; the comma after the key is optional.
    assert out.subject == "Welcome <h1><X></h1><img src=''>"


def test_the_tags_values_take_liquids_filter_arguments_as_the_guide_writes_them(ent, renderer):
    create(ent, "email-header", SMS, "[{{ companyName }}|{{ logoUrl }}]")
    tid = create(
        ent,
        "welcome",
        SMS,
        '{% xnovu_render "email-header",\n'
        '    companyName: company.name | default: "XNovu",\n'
        "    logoUrl: company.logoUrl | default: fallback.url | upper\n"
        "  %}",
    )
    render = partial(renderer.render_template, tid, ent)
    given = {"company": {"name": "Acme", "logoUrl": "l.png"}, "fallback": {"url": "f"}}
    assert render(given).body == "[Acme|L.PNG]"
    # Liquid's default also replaces an empty value; Jinja's alone only an undefined one.
    assert render({"company": {"name": ""}, "fallback": {"url": "f"}}).body == "[XNovu|F]"


def test_the_tag_passes_set_variables_and_its_own_win(ent, renderer):
    # The original guide's layout example, in the sandbox's syntax ({% set %} for Liquid's
    # assign and capture).
    create(ent, "email-base", SMS, "[{{ title }}|{{ content }}|{{ user }}|{{ n }}]")
    tid = create(
        ent,
        "welcome",
        SMS,
        '{% set title = "Welcome to XNovu" %}{% set content %}Hi {{ user }}{% endset %}'
        "{% for item in items %}"
        '{% xnovu_render "email-base", title: title ~ "!", content: content, n: item %}'
        "{% endfor %}",
    )
    out = renderer.render_template(tid, ent, {"user": "Ada", "items": [1, 2], "title": "no"})
    assert out.body == "[Welcome to XNovu!|Hi Ada|Ada|1][Welcome to XNovu!|Hi Ada|Ada|2]"
    # The variables of the loops the tag is in: an inner loop's over an outer one's, the
    # tag's own over both; none after the loop.
    create(ent, "row", SMS, "({{ item }}{{ x }}{{ k }})")
    loop = create(
        ent,
        "loop",
        SMS,
        "{% for item in [1, 2] %}{% for item, x in [(3, 4)] %}"
        '{% if true %}{% xnovu_render "row", k: loop.index %}{% endif %}{% endfor %}'
        '{% xnovu_render "row", x: 0, k: "" %}{% for k, v in {"a": 1}.items() %}'
        '{% xnovu_render "row", x: v %}{% endfor %}{% else %}{% xnovu_render "row" %}'
        "{% endfor %}",
    )
    assert renderer.render_template(loop, ent, {}).body == "(341)(10)(11a)(341)(20)(21a)"
    after = create(ent, "after", SMS, '{% for item in [1] %}{% endfor %}{% xnovu_render "row" %}')
    with pytest.raises(RenderError, match="'item' is undefined"):
        renderer.render_template(after, ent, {})


def test_the_tag_keeps_the_function_forms_limits(ent, stack):
    renderer = TemplateRenderer(Settings().model_copy(update={"template_max_depth": 2}))
    create(ent, "a", SMS, 'A{% xnovu_render "b" %}')
    create(ent, "b", SMS, "B{% xnovu_render 'a' %}")
    with pytest.raises(RenderError, match=r"template cycle: a -> b -> a"):
        renderer.render_template_by_key("a", ent, {})
    create(ent, "l3", SMS, "3")
    create(ent, "l2", SMS, '2{% xnovu_render "l3" %}')
    create(ent, "l1", SMS, '1{% xnovu_render "l2" %}')
    create(ent, "l0", SMS, '0{% xnovu_render "l1" %}')
    assert renderer.render_template_by_key("l1", ent, {}).body == "123"
    with pytest.raises(RenderLimitExceeded, match="more than 2 levels deep"):
        renderer.render_template_by_key("l0", ent, {})
    other = uuid.uuid4()
    create(other, "theirs", SMS, "their secret")
    with pytest.raises(RenderError, match="template 'theirs' not found"):
        renderer.render_template(create(ent, "outer", SMS, '{% xnovu_render "theirs" %}'), ent, {})
    with pytest.raises(RenderError, match="only available when rendering for an enterprise"):
        sms(renderer, '{% xnovu_render "x" %}')


@pytest.mark.parametrize(
    "source",
    [
        "{% xnovu_render %}",
        '{% xnovu_render "k", %}',
        '{% xnovu_render "k", a %}',
        '{% xnovu_render "k", a: %}',
        '{% xnovu_render "k" a: 1 b: 2 %}',
    ],
)
def test_a_malformed_tag_is_a_syntax_error_with_its_line(ent, source):
    with transaction() as session, pytest.raises(InvalidTemplate) as info:
        TemplateService(session).create_template(
            ent, NewTemplate(template_key="bad", channel_type=SMS, body_template="\n" + source)
        )
    assert info.value.syntax and info.value.errors[0]["line"] == 2


# -- undefined variables -----------------------------------------------------------------


def test_undefined_variables_fail_when_strict_and_print_blank_when_blank(ent, renderer):
    source = "Hi {{ user.name }}{{ missing }}!{% for x in nothing %}x{% endfor %}"
    strict = create(ent, "strict", SMS, source)
    blank = create(ent, "blank", SMS, source, undefined_mode="blank")
    with pytest.raises(RenderError, match="'user' is undefined"):
        renderer.render_template(strict, ent, {})
    assert renderer.render_template(blank, ent, {}).body == "Hi !"
    assert renderer.render_template(blank, ent, {"user": {"name": "Ada"}}).body == "Hi Ada!"
    # A nested template renders in its own mode.
    outer = create(ent, "outer", SMS, '{% xnovu_render "blank" %}/{% xnovu_render "strict" %}')
    with pytest.raises(RenderError, match="'user' is undefined"):
        renderer.render_template(outer, ent, {})


# -- publishing --------------------------------------------------------------------------


def test_a_draft_is_never_sent_but_previews(ent, renderer):
    draft = create(ent, "draft", SMS, "draft {{ x }}", publish=False)
    with pytest.raises(TemplateNotPublished, match="'draft' is not published"):
        renderer.render_template(draft, ent, {"x": 1})
    outer = create(ent, "outer", SMS, 'o {% xnovu_render "draft", x: 2 %}')
    with pytest.raises(TemplateNotPublished, match="xnovu_render: template 'draft'"):
        renderer.render_template(outer, ent, {})
    preview = renderer.render_source(
        SMS, None, 'p {% xnovu_render "draft", x: 3 %}', {}, enterprise_id=ent, drafts=True
    )
    assert preview.body == "p draft 3"
    # Publishing makes it usable at once (the cache learns of the edit).
    with transaction() as session:
        TemplateService(session).publish_template(draft, ent)
    renderer.invalidate_enterprise(ent)
    assert renderer.render_template(outer, ent, {}).body == "o draft 2"


# -- locales -----------------------------------------------------------------------------


def test_locale_chain_and_choice():
    assert locale_chain("fr-CA") == ["fr-ca", "fr"]
    assert locale_chain("zh_Hant_TW") == ["zh-hant-tw", "zh-hant", "zh"]
    variants = {"fr": 1, "zh-hant": 2}
    assert choose_variant(variants, "fr-CA") == "fr"
    assert choose_variant(variants, "FR") == "fr"
    assert choose_variant(variants, "zh-Hant-TW") == "zh-hant"
    assert choose_variant(variants, "de-DE") is None
    assert choose_variant(variants, None) is None
    assert usable_locale("pt-BR") == "pt-BR"
    assert usable_locale("x" * 200) is None and usable_locale(3) is None


def test_variants_are_chosen_by_the_fallback_chain(ent, renderer):
    create(ent, "sig", SMS, "-- team", locales={"fr": {"body_template": "-- équipe"}})
    tid = create(
        ent,
        "hello",
        EMAIL,
        '<p>Hello {{ name }}</p>{% xnovu_render "sig" %}',
        subject_template="Hello",
        locales={
            "fr": {"subject_template": "Bonjour", "body_template": "<p>Bonjour {{ name }}</p>"},
            "fr-CA": {
                "subject_template": "Allo",
                "body_template": '<p>Allo {{ name }}</p>{% xnovu_render "sig" %}',
            },
        },
    )

    def render(locale: str | None) -> tuple[str | None, str]:
        out = renderer.render_template(tid, ent, {"name": "Ada"}, locale=locale)
        return out.subject, out.body

    assert render("fr-CA") == ("Allo", "<p>Allo Ada</p>-- équipe")
    assert render("fr-FR") == ("Bonjour", "<p>Bonjour Ada</p>")
    assert render("fr") == ("Bonjour", "<p>Bonjour Ada</p>")
    assert render("de") == ("Hello", "<p>Hello Ada</p>-- team")
    assert render(None) == ("Hello", "<p>Hello Ada</p>-- team")


def test_each_variant_is_checked_by_the_channels_rules(ent):
    with transaction() as session, pytest.raises(InvalidTemplate) as info:
        TemplateService(session).create_template(
            ent,
            NewTemplate(
                template_key="v",
                channel_type=EMAIL,
                subject_template="S",
                body_template="B",
                locales={"fr": {"body_template": "B"}},
            ),
        )
    assert info.value.errors == [
        {"field": "locales.fr.subject_template", "message": "an EMAIL template needs a subject"}
    ]
    with transaction() as session, pytest.raises(InvalidTemplate) as info:
        TemplateService(session).create_template(
            ent,
            NewTemplate(
                template_key="v",
                channel_type=SMS,
                body_template="B",
                locales={"de": {"body_template": "ok\n{{ oops( }}"}},
            ),
        )
    assert info.value.syntax and info.value.errors[0]["field"] == "locales.de.body_template"
    assert info.value.errors[0]["line"] == 2


# -- overrides ---------------------------------------------------------------------------


def test_overrides_strings_are_rendered_and_the_rest_kept(ent, renderer):
    overrides = {
        "email": {
            "subject": "Re: {{ ticket.id }}",
            "html": "<b>{{ name }}</b>",
            "cc": ["{{ ticket.owner }}", "fixed@x.io"],
            "customData": {"n": 3, "flag": True, "none": None},
        },
        "steps": {"sms": {"providers": {"twilio": {"content": "{% if vip %}VIP {% endif %}hi"}}}},
        "{{ key }}": "kept {{ '{{' }}",
    }
    payload = {"ticket": {"id": 7, "owner": "o@x.io"}, "name": "<A>", "vip": True}
    out = renderer.render_values(overrides, payload, enterprise_id=ent)
    assert out == {
        "email": {
            "subject": "Re: 7",
            "html": "<b>&lt;A&gt;</b>",
            "cc": ["o@x.io", "fixed@x.io"],
            "customData": {"n": 3, "flag": True, "none": None},
        },
        "steps": {"sms": {"providers": {"twilio": {"content": "VIP hi"}}}},
        "{{ key }}": "kept {{",
    }
    with pytest.raises(RenderError, match=r"overrides.email.subject: 'ticket' is undefined"):
        renderer.render_values({"email": {"subject": "{{ ticket.id }}"}}, {}, enterprise_id=ent)


def test_many_override_strings_share_one_render_timeout(ent, stack):
    renderer = TemplateRenderer(
        Settings().model_copy(update={"template_render_timeout_seconds": 0.05})
    )
    # Each distinct string is compiled (about half a millisecond) and renders without touching
    # any of the sandbox's hooks: 5,000 of them take longer than the render's timeout, which
    # stops them.
    overrides = {"sms": {f"k{i}": "{% if " + str(i) + " %}{% endif %}" for i in range(5_000)}}
    with pytest.raises(RenderLimitExceeded, match="timed out"):
        renderer.render_values(overrides, {}, enterprise_id=ent)
