"""The sandbox against injection and resource exhaustion: every case is refused with a
RenderError (or renders inert), quickly, and without building the huge value first."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from shared.db.enums import ChannelType
from shared.settings import Settings
from shared.templates import (
    RenderError,
    RenderLimitExceeded,
    RenderMemoryExceeded,
    TemplateRenderer,
    TemplateSecurityError,
    validate_template_source,
)

TIMEOUT = 0.5


@pytest.fixture(autouse=True, scope="module")
def no_long_collection_pauses() -> Iterator[None]:
    """The deadline covers compiling too. Late in one `make test` run a case timed out before
    its first attribute check, failing as a timeout instead of as the refusal it checks; the
    likeliest pause is a full garbage collection, which costs about 85 ms here with only this
    module loaded and more with the whole suite's heap. Freezing what the suite has built so
    far keeps collections during these cases short; the product's limits are unchanged."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(
        Settings().model_copy(
            update={
                "template_render_timeout_seconds": TIMEOUT,
                "template_max_output_bytes": 100_000,
            }
        )
    )


def render(renderer: TemplateRenderer, body: str, channel: ChannelType = ChannelType.IN_APP,
           **variables: Any) -> str:  # fmt: skip
    return renderer.render_source(channel, None, body, variables, enterprise_id=None).body


# -- injection ------------------------------------------------------------------------------

REFUSED_AS_UNSAFE = {
    "str_class_mro": "{{ ''.__class__.__mro__ }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "list_base_subclasses": "{{ [].__class__.__base__.__subclasses__() }}",
    "cycler_globals": "{{ cycler.__init__.__globals__ }}",
    "joiner_globals_os": "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
    "namespace_globals_sys": "{{ namespace.__init__.__globals__['sys'].modules }}",
    "range_globals": "{{ range.__globals__ }}",
    "xnovu_render_globals": "{{ xnovu_render.__globals__ }}",
    "template_reference_context": "{{ self._TemplateReference__context }}",
    "self_dict": "{{ self.__dict__ }}",
    "loop_class": "{% for i in [1] %}{{ loop.__class__ }}{% endfor %}",
    "attr_filter": "{{ ''|attr('__class__') }}",
    "attr_filter_format": "{{ ''|attr('format') }}",
    "subscript_dunder": "{{ ''['__class__'] }}",
    "str_format_attribute_walk": "{{ '{0.__class__.__mro__}'.format('') }}",
    "str_format_map": "{{ '{x.__class__}'.format_map({'x': 1}) }}",
    "str_format_method": "{{ ''.format }}",
    "markup_format": "{{ ('<b>{}</b>'|safe).format(1) }}",
    "type_mro": "{{ dict.mro() }}",
    "int_to_bytes": "{{ (1).to_bytes(1000000000, 'big') }}",
    "str_encode": "{{ 'x'.encode() }}",
    "str_translate": "{{ 'aaaa'.translate({97: 'b'}) }}",
    "generator_frame": "{{ ([1]|map('string')).gi_frame }}",
    "payload_dict_class": "{{ payload.__class__ }}",
    "for_over_subclasses": (
        "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}"
    ),
    "map_attribute_dunder_joined": "{{ 'ab'|map(attribute='__class__')|join }}",
}


@pytest.mark.parametrize("body", REFUSED_AS_UNSAFE.values(), ids=REFUSED_AS_UNSAFE.keys())
def test_attribute_injection_is_refused(renderer, body):
    with pytest.raises(TemplateSecurityError, match="unsafe") as info:
        render(renderer, body, payload={"a": 1})
    assert "<module" not in str(info.value)


UNDEFINED_GLOBALS = {
    "lipsum_globals": "{{ lipsum.__globals__ }}",
    "lipsum_call": "{{ lipsum(1000000) }}",
    "request": "{{ request }}",
    "config_items": "{{ config.items() }}",
    "request_application_globals": "{{ request.application.__globals__ }}",
    "url_for_globals": "{{ url_for.__globals__['os'] }}",
    "get_flashed_messages": "{{ get_flashed_messages.__globals__ }}",
}


@pytest.mark.parametrize("body", UNDEFINED_GLOBALS.values(), ids=UNDEFINED_GLOBALS.keys())
def test_framework_and_dropped_globals_are_undefined(renderer, body):
    with pytest.raises(RenderError, match="is undefined"):
        render(renderer, body)


def test_probing_renders_inert(renderer):
    assert render(renderer, "{{ ''.__class__ is defined }}") == "False"
    assert render(renderer, "{{ range(3) }}") == "range(0, 3)"
    assert render(renderer, "{{ '%s'|format(payload) }}", payload={"k": "<v>"}) == (
        "{&#39;k&#39;: &#39;&lt;v&gt;&#39;}"
    )


def test_include_import_and_extends_have_no_loader(renderer):
    for body in ("{% include 'x' %}", "{% import 'x' as y %}", "{% extends 'x' %}"):
        with pytest.raises(RenderError, match="not supported"):
            render(renderer, body)
        assert validate_template_source(None, body)[0]["line"] == 1


def test_autoescape_protects_html_bodies_from_payload(renderer):
    evil = "<script>alert(1)</script>"
    assert "<script>" not in render(renderer, "{{ x }}", x=evil)
    assert "<script>" not in render(renderer, "{{ 'a' ~ x }}", x=evil)
    assert "<script>" not in render(renderer, "{{ '%s'|format(x) }}", x=evil)


# -- resource limits ------------------------------------------------------------------------

LIMITS = {
    "nested_range_loop_without_output": (
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    ),
    "nested_loops_over_a_string": (
        "{% set s = 'x' * 1000 %}"
        "{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}"
    ),
    "exponential_macro_recursion": (
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(60) }}"
    ),
    "infinite_macro_recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "infinite_recursive_loop": "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
    "huge_range": "{{ range(10 ** 12)|list }}",
    "string_repetition": "{{ 'x' * 1000000000 }}",
    "list_repetition": "{{ [0] * 1000000000 }}",
    "power_tower": "{{ 9 ** (9 ** 9) }}",
    "big_int_product": "{% set n = 10 ** 700 %}{{ n * n }}",
    "concat_doubling": (
        "{% set ns = namespace(s='x') %}"
        "{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
    ),
    "plus_doubling": (
        "{% set ns = namespace(s=['x']) %}"
        "{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}"
    ),
    "printf_width": "{{ '%999999999s' % 'x' }}",
    "printf_precision": "{{ '%.999999999f' % 1.0 }}",
    "printf_star_width": "{{ '%*s' % (999999999, 'x') }}",
    "format_filter_width": "{{ '%999999999d'|format(1) }}",
    "center_filter": "{{ 'x'|center(999999999) }}",
    "center_method": "{{ 'x'.center(999999999) }}",
    "ljust_method": "{{ 'x'.ljust(999999999) }}",
    "zfill_method": "{{ '1'.zfill(999999999) }}",
    "indent_filter": "{{ ('a\n' * 1000)|indent(999999) }}",
    "replace_method_empty_old": "{{ ('x' * 10000).replace('', 'y' * 10000) }}",
    "replace_filter": "{{ ('x' * 10000)|replace('x', 'y' * 10000) }}",
    "wordwrap_filter": "{{ ('a ' * 10000)|wordwrap(1, wrapstring='y' * 10000) }}",
    "urlize_filter": "{{ ('a.com ' * 5000)|urlize(target='y' * 10000) }}",
    "join_method": "{{ ('y' * 10000).join(range(1000)|map('string')) }}",
    "join_filter": "{{ range(1000)|join('y' * 10000) }}",
    "batch_fill": "{{ [1]|batch(999999999, 'x')|list }}",
    "slice_count": "{{ [1]|slice(999999999)|list }}",
    "print_shared_references": "{{ [['x' * 10000] * 1000] * 1000 }}",
    "string_filter_of_big_list": "{{ ([['x' * 10000] * 1000] * 1000)|string }}",
    "tojson_of_big_list": "{{ ([['x' * 10000] * 1000] * 1000)|tojson }}",
    "macro_buffer": (
        "{% macro m() %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endmacro %}"
        "{{ m()|length }}"
    ),
    "set_block_buffer": (
        "{% set b %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endset %}{{ b|length }}"
    ),
    "filter_block_buffer": (
        "{% filter length %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endfilter %}"
    ),
    "streamed_output": "{% for i in range(100000) %}{{ s }}{% endfor %}",
    "cyclic_namespace": "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
}


@pytest.mark.parametrize("body", LIMITS.values(), ids=LIMITS.keys())
def test_resource_exhaustion_is_stopped(renderer, body):
    started = time.monotonic()
    with pytest.raises(RenderLimitExceeded):
        render(renderer, body, ChannelType.SMS, s="z" * 100)
    assert time.monotonic() - started < TIMEOUT + 1.5


def test_the_timeout_message_is_the_reason(renderer):
    body = LIMITS["nested_range_loop_without_output"]
    with pytest.raises(
        RenderLimitExceeded, match=f"rendering timed out: it took longer than {TIMEOUT:g} s"
    ):
        render(renderer, body)


def test_sum_adds_numbers_only(renderer):
    assert render(renderer, "{{ [1, 2.5]|sum }}") == "3.5"
    with pytest.raises(RenderError, match="adds numbers only"):
        render(renderer, "{{ [[1], [2]]|sum(start=[]) }}")


def test_errors_from_python_become_render_errors(renderer):
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        render(renderer, "{{ 1 // 0 }}")
    with pytest.raises(RenderError, match="TypeError"):
        render(renderer, "{{ 'a' + 1 }}")


def test_compiling_a_hostile_template_does_not_fold_it():
    # Constant folding runs filters at compile time: the guards make it bail out, so saving
    # such a template is fast and harmless (rendering it is then refused).
    started = time.monotonic()
    assert validate_template_source(None, "{{ 'x'|center(999999999) }}{{ 'y' * 10**9 }}") == []
    [deep] = validate_template_source(None, "{{ " + "[" * 5000 + "]" * 5000 + " }}")
    assert deep["message"] == "the template is nested too deeply to compile"
    assert time.monotonic() - started < 2


def test_reasonable_templates_still_work(renderer):
    body = (
        "{% for item in items %}{{ loop.index }}. {{ item.name|title }} x{{ item.qty }}"
        " = {{ '%.2f'|format(item.qty * item.price) }}{% if not loop.last %}, {% endif %}"
        "{% endfor %} | {{ items|map(attribute='qty')|sum }} items"
        " | {{ ', '.join(tags) }} | {{ note|default('-')|upper }} | {{ 2 ** 10 }}"
        " | {{ 'ab' * 3 }} | {{ range(3)|join('-') }} | {{ 'a-b'.replace('-', '+') }}"
    )
    out = render(
        renderer,
        body,
        ChannelType.SMS,
        items=[{"name": "tea", "qty": 2, "price": 1.5}, {"name": "cake", "qty": 1, "price": 3}],
        tags=["x", "y"],
    )
    assert (
        out
        == "1. Tea x2 = 3.00, 2. Cake x1 = 3.00 | 3 items | x, y | - | 1024 | ababab | 0-1-2 | a+b"
    )


# -- memory ---------------------------------------------------------------------------------

# Each builds far more than TEMPLATE_MAX_MEMORY_BYTES out of values that are each within the
# output limit; the first took a worker child from 129 MB to 3.5 GB before its timeout.
MEMORY_BOMBS = {
    "center_every_number": "{{ range(100000)|map('string')|map('center', 999999)|list|length }}",
    "ljust_in_a_loop": ("{% for i in range(100000) %}{% set x = 'x'.ljust(999999) %}{% endfor %}"),
    "split_into_many_strings": "{{ ('a ' * 499999).split()|length }}",
    "set_block_buffers": (
        "{% for i in range(100000) %}{% set b %}{{ s * 9999 }}{% endset %}{% endfor %}"
    ),
    "slices_of_a_long_string": (
        "{% set long = s * 9999 %}{% for i in range(100000) %}{{ long[i:]|length }}{% endfor %}"
    ),
    "concatenations": "{% for i in range(100000) %}{{ (s * 9999 ~ i)|length }}{% endfor %}",
    "list_repetitions": "{% for i in range(100000) %}{% set l = [i] * 999999 %}{% endfor %}",
}
MEMORY_TIMEOUT = 30.0  # far away: the memory budget, not the clock, must stop these


@pytest.fixture(scope="module")
def budgeted() -> TemplateRenderer:
    """The default limits (1 MB of output, 8 MiB of memory), with a timeout out of the way."""
    settings = Settings().model_copy(update={"template_render_timeout_seconds": MEMORY_TIMEOUT})
    assert settings.template_max_memory_bytes == 8 * 1024 * 1024
    return TemplateRenderer(settings)


def peak_bytes(run: Any) -> int:
    """The most memory Python held while `run()` ran (tracemalloc)."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("body", MEMORY_BOMBS.values(), ids=MEMORY_BOMBS.keys())
def test_memory_bombs_fail_on_the_memory_budget(budgeted, body):
    def run() -> None:
        with pytest.raises(RenderMemoryExceeded, match="TEMPLATE_MAX_MEMORY_BYTES"):
            render(budgeted, body, ChannelType.SMS, s="z" * 100)

    # The budget is 8 MiB; what else a render holds (its compiled code, the 1 MB output limit,
    # one value past the budget) stays well within 64 MB.
    assert peak_bytes(run) < 64 * 1024 * 1024


def test_the_memory_reason_says_what_it_refused(budgeted):
    with pytest.raises(RenderMemoryExceeded) as info:
        render(budgeted, MEMORY_BOMBS["center_every_number"])
    assert "more than 8388608 bytes of memory" in str(info.value)
    assert "the center filter" in str(info.value)


def test_compiling_does_not_fold_filters_outside_the_budget():
    # Jinja folds constant filter calls while compiling, with no render (nor budget) running:
    # 300 centred strings took 1.2 GB to save. Filters take the context, so none is folded.
    body = "{{ 'x'|center(999999) }}" * 300
    assert peak_bytes(lambda: validate_template_source(None, body)) < 64 * 1024 * 1024


def test_large_honest_renders_fit_the_budget(budgeted):
    # A 70 KB payload printed as JSON twelve times (over 850 KB of output, near the most a body
    # may have), through filters, loops and joins: well within the memory budget.
    payload = {f"k{i}": "v" * 60 for i in range(1000)}
    body = (
        "{% for i in range(12) %}{{ payload|tojson }}{% endfor %}"
        "{{ payload.values()|map('upper')|join(',')|length }}"
    )
    out = render(budgeted, body, ChannelType.SMS, payload=payload)
    assert len(out) > 850_000
    assert out.endswith(str(1000 * 61 - 1))
