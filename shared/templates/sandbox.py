"""The hardened Jinja2 sandbox every XNovu template renders in.

Jinja's `ImmutableSandboxedEnvironment` already refuses private and internal attributes
(`__class__`, `__globals__`, `gi_frame`, ...) and mutation of lists and dicts. On top of it:

- Bounds. Every hook charges the render's budget and checks sizes (shared.templates.limits):
  attribute and item access, calls, `*`, `**`, `+` and `%`, printed values, each `{% for %}`
  loop (the code generator wraps each loop's iterable), `~`, and every buffer a macro,
  `{% set %}` block or filter block joins. The filters and str methods that amplify (`center`,
  `indent`, `format`, `replace`, `join`, `wordwrap`, `urlize`, `batch`, `slice`, `sum` of
  non-numbers) are checked before they run.
- Memory. What the hooks build is charged to the render's byte budget (see limits.py):
  filters' results and the items their generators yield, calls' results (a str method's parts
  too), intercepted operators' results, slices and joined buffers. Every filter takes the
  context, so that Jinja never folds one at compile time, outside any render's budget (300
  `{{ 'x'|center(999999) }}` took 1.2 GB to save).
- Surface. `lipsum` is gone, `range` is bounded (100 000 items), `str.format`/`format_map` are
  refused (the `format` filter remains), strings and numbers expose only an allowlist of
  harmless methods, bytes and generators none. There is no loader: `{% include %}`,
  `{% import %}` and `{% extends %}` fail; `xnovu_render('key', {...})` and the original's tag
  form `{% xnovu_render "key", name: value %}` nest templates instead.
- The original's filters (shared.templates.filters) are guarded like Jinja's.

The renderer (shared.templates.renderer) turns every failure into a `RenderError`.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import (
    BaseLoader,
    ChainableUndefined,
    StrictUndefined,
    TemplateNotFound,
    nodes,
    pass_context,
    pass_eval_context,
)
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.environment import Environment
from jinja2.exceptions import TemplateSyntaxError
from jinja2.ext import Extension
from jinja2.nodes import EvalContext
from jinja2.parser import Parser
from jinja2.runtime import Context, Macro, Undefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg
from markupsafe import Markup

from shared.templates.errors import RenderError, RenderLimitExceeded
from shared.templates.filters import ORIGINAL_FILTERS
from shared.templates.limits import (
    MAX_RANGE,
    charge,
    charge_items,
    charged,
    check_binop,
    check_deadline,
    check_joined,
    check_printf,
    check_size,
    check_str_call,
    current_budget,
    deadline_checked,
    guarded_range,
    replaced_size,
    text_size,
    too_large,
)

# RenderError has always been importable from here; its home is shared.templates.errors.
__all__ = ["RenderError", "XNovuRenderTag", "XNovuSandbox", "source_errors", "xnovu_render"]

_STR_METHODS = frozenset(
    {
        "capitalize", "casefold", "center", "count", "endswith", "find", "index", "isalnum",
        "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
        "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip",
        "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
        "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip",
        "swapcase", "title", "upper", "zfill",
    }
)  # fmt: skip
_MARKUP_METHODS = _STR_METHODS | {"striptags", "unescape"}
_NUMBER_ATTRIBUTES = frozenset(
    {"real", "imag", "numerator", "denominator", "is_integer", "bit_length"}
)
_NOT_LOADABLE = (
    "{% include %}, {% import %} and {% extends %} are not supported; "
    "nest templates with xnovu_render('template_key', {...})"
)
_MISSING = object()


@pass_eval_context
def xnovu_render(
    eval_ctx: EvalContext, template_key: Any, variables: Any = None, **kwargs: Any
) -> str:
    """Render the body of another template of the same enterprise, here."""
    if variables is None:
        variables = {}
    if not isinstance(variables, Mapping):
        raise RenderError("xnovu_render() takes its variables as a mapping, e.g. {'name': name}")
    return _render_nested(eval_ctx, "xnovu_render()", template_key, {**variables, **kwargs})


def _render_nested(
    eval_ctx: EvalContext, form: str, template_key: Any, variables: dict[str, Any]
) -> str:
    """Both forms of xnovu_render: the nested template's body, within the caller's budget."""
    budget = current_budget()
    if budget is None or budget.include is None:
        raise RenderError(f"{form} is only available when rendering for an enterprise")
    if not isinstance(template_key, str) or not template_key:
        raise RenderError(f"{form} needs a template key as its first argument")
    html = bool(eval_ctx.autoescape)
    with budget.nested(template_key):
        output = budget.include(template_key, variables, html)
    # Already escaped for HTML where it lands: mark it safe so it is not escaped twice.
    return Markup(output) if html else output


class XNovuRenderTag(Extension):
    """The original's tag form, `{% xnovu_render "key", name: expr, other: expr %}`.

    As in the original, the nested template sees the caller's variables (those of the render,
    its `{% set %}`s and the variables of the loops the tag is in) with the tag's on top. The
    function form sees only what it is given. The key may be any expression; each value is an
    expression of the sandbox (`name | default('x')`, or Liquid's `name | default: 'x'` for a
    filter of one argument). The comma after the key may be left out.
    """

    tags = {"xnovu_render"}  # noqa: RUF012 (Jinja reads it from the class)

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        key = parser.parse_expression()
        pairs: list[nodes.Pair] = []
        while parser.stream.current.type != "block_end":
            if pairs:
                parser.stream.expect("comma")
            else:
                parser.stream.skip_if("comma")
            name = parser.stream.expect("name")
            parser.stream.expect("colon")
            value = _tag_value(parser)
            pairs.append(nodes.Pair(nodes.Const(name.value), value, lineno=name.lineno))
        call = self.call_method("_render", [key, nodes.Dict(pairs)], lineno=lineno)
        return nodes.Output([call], lineno=lineno)

    @pass_context
    def _render(self, context: Context, template_key: Any, variables: dict[str, Any]) -> str:
        globals_ = self.environment.globals
        inherited = {
            name: value
            for name, value in context.get_all().items()
            if globals_.get(name, _MISSING) is not value
        }
        return _render_nested(
            context.eval_ctx, "{% xnovu_render %}", template_key, {**inherited, **variables}
        )


def _arg(args: list[Any], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    if index < len(args):
        return args[index]
    return kwargs.get(name, default)


def _words(value: Any, limit: int) -> tuple[int, int]:
    """(length, number of whitespace-separated pieces) of a filter's text input."""
    if isinstance(value, str):
        return len(value), value.count(" ") + value.count("\n") + 1
    size = text_size(value, limit)
    return size, size + 1


class _GuardedCodeGenerator(CodeGenerator):
    """Jinja's code generator with each loop's iterable, each slice and each `~` routed through
    checks."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        passed: dict[int, int] = {}
        for loop in node.find_all(nodes.For):  # outer loops before the loops they hold
            _pass_loop_variables(loop, passed)
            guard = nodes.Call(
                nodes.EnvironmentAttribute("xnovu_guard_iter"), [loop.iter], [], None, None
            )
            guard.set_lineno(loop.iter.lineno)
            guard.set_environment(self.environment)
            loop.iter = guard
        super().visit_Template(node, frame)

    @optimizeconst
    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        # Jinja writes a slice as Python's `x[a:b]`, past environment.getitem: route it there,
        # so that the copy it makes is charged to the render's memory budget.
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for index, part in enumerate((node.arg.start, node.arg.stop, node.arg.step)):
            self.write(", " if index else "")
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
        self.write("))")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func = (
                "(environment.xnovu_markup_join if context.eval_ctx.volatile"
                " else environment.xnovu_str_join)"
            )
        elif frame.eval_ctx.autoescape:
            func = "environment.xnovu_markup_join"
        else:
            func = "environment.xnovu_str_join"
        self.write(f"{func}((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _tag_value(parser: Parser) -> nodes.Expr:
    """A value of the tag: an expression, whose filters may also take one argument Liquid's
    way, as the original's guide writes them (`company.name | default: "XNovu"`). Liquid's
    `default` also replaces an empty or false value, so that one is `default(x, true)`."""
    value = parser.parse_expression()
    while (
        parser.stream.current.type == "colon"
        and isinstance(value, nodes.Filter)
        and not (value.args or value.kwargs or value.dyn_args or value.dyn_kwargs)
    ):
        next(parser.stream)
        value.args = [parser.parse_unary(with_filter=False)]
        if value.name == "default":
            value.args.append(nodes.Const(True))
        if parser.stream.current.type == "pipe":
            value = parser.parse_filter(value) or value
    return value


def _pass_loop_variables(loop: nodes.For, passed: dict[int, int]) -> None:
    """Give each `{% xnovu_render %}` tag in the loop's body the loop's variables, as the
    original's tag saw them: Jinja keeps them local, out of the context the tag reads.
    `passed` counts, per tag, the variables of enclosing loops already given, so that an inner
    loop's come after them (and win) and the tag's own come last (and win over both)."""
    target = loop.target
    names = [target] if isinstance(target, nodes.Name) else list(target.find_all(nodes.Name))
    for statement in loop.body:
        calls = [statement] if isinstance(statement, nodes.Call) else []
        for call in [*calls, *statement.find_all(nodes.Call)]:
            if not (
                isinstance(call.node, nodes.ExtensionAttribute)
                and call.node.identifier == XNovuRenderTag.identifier
                and isinstance(call.args[1], nodes.Dict)
            ):
                continue
            given = call.args[1]
            at = passed.get(id(given), 0)
            pairs = [
                nodes.Pair(
                    nodes.Const(name.name), nodes.Name(name.name, "load"), lineno=loop.lineno
                )
                for name in names
            ]
            given.items[at:at] = pairs
            passed[id(given)] = at + len(pairs)


class _NoLoader(BaseLoader):
    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, None]:
        raise TemplateNotFound(template, _NOT_LOADABLE)


class XNovuSandbox(ImmutableSandboxedEnvironment):
    """The sandbox: immutable, strict about undefined names (or blank, as the original was),
    and budgeted."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, *, autoescape: bool, max_text: int, strict: bool = True) -> None:
        self.max_text = max_text
        super().__init__(
            autoescape=autoescape,
            # Blank: an undefined name, and any attribute or item of it, prints as "".
            undefined=StrictUndefined if strict else ChainableUndefined,
            finalize=self._finalize,
            loader=_NoLoader(),
            cache_size=0,
            auto_reload=False,
            extensions=[XNovuRenderTag],
        )
        self.globals.pop("lipsum", None)
        self.globals["range"] = guarded_range
        self.globals["xnovu_render"] = xnovu_render
        self.filters.update(ORIGINAL_FILTERS)
        self.filters = {name: self._guard_filter(name, f) for name, f in self.filters.items()}

    # -- checks -------------------------------------------------------------------------

    def check_text(self, value: Any, what: str = "the text of a value") -> None:
        """Refuse a value whose text form would be longer than max_text."""
        if text_size(value, self.max_text) > self.max_text:
            raise too_large(what, self.max_text)

    def concat(self, parts: Iterable[str]) -> str:
        """Join a buffer (macro output, `{% set %}` blocks, filter blocks), within the limit."""
        items = parts if isinstance(parts, list) else list(parts)
        check_joined(items, self.max_text)
        joined = "".join(items)
        charge(joined, "a joined buffer")
        return joined

    def _finalize(self, value: Any) -> Any:
        # Every {{ ... }} passes here before it becomes text.
        check_deadline()
        if value is None:
            return ""
        if isinstance(value, str):
            if len(value) > self.max_text:
                raise too_large("a printed value", self.max_text)
        elif not isinstance(value, (int, float, Undefined)):
            self.check_text(value)
        return value

    # -- sandbox hooks ------------------------------------------------------------------

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, Markup):
            return attr in _MARKUP_METHODS
        if isinstance(obj, str):
            return attr in _STR_METHODS
        if isinstance(obj, (int, float)):
            return attr in _NUMBER_ATTRIBUTES
        return not isinstance(obj, (bytes, bytearray, memoryview, types.GeneratorType))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # str.format and format_map are refused outright (is_safe_attribute): no format-string
        # attribute walks, no `{:>999999999}` widths. The `format` filter (printf) remains.
        return None

    def getattr(self, obj: Any, attribute: str) -> Any:
        check_deadline()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        check_deadline()
        item = super().getitem(obj, argument)
        if isinstance(argument, slice):
            charge(item, "a slice")
        return item

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        check_deadline()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            args = check_str_call(owner, getattr(obj, "__name__", ""), args, self.max_text)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, str) and len(result) > self.max_text:
            raise too_large("the result of a call", self.max_text)
        if not isinstance(obj, Macro):  # a macro's output was charged as its buffer was joined
            charge(result, "the result of a call")
            if isinstance(owner, str) and isinstance(result, (list, tuple)):
                charge_items(result, "the parts of a string")  # split, partition: new strings
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_deadline()
        check_binop(operator, left, right, self.max_text)
        result = super().call_binop(context, operator, left, right)
        charge(result, f"the {operator} operator")
        return result

    # -- filters, for loops and `~` -----------------------------------------------------

    def _guard_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        passes = _PassArg.from_obj(func)
        check = _FILTER_CHECKS.get(name)
        what = f"the {name} filter"

        @functools.wraps(func)
        def guarded(context: Context, *args: Any, **kwargs: Any) -> Any:
            check_deadline()
            own = list(args)
            for value in (*own, *kwargs.values()):
                if not isinstance(value, (str, int, float, Undefined)) and value is not None:
                    self.check_text(value, f"the input of {what}")
            if check is not None:
                check(self, own, kwargs)
            if passes is None:
                result = func(*own, **kwargs)
            else:
                result = func(_passed(passes, context), *own, **kwargs)
            if isinstance(result, str) and len(result) > self.max_text:
                raise too_large(f"the output of {what}", self.max_text)
            if isinstance(result, Iterator):
                return charged(result, what)
            charge(result, what)
            return result

        # Called with the context, so Jinja never runs it at compile time (constant folding
        # happens outside any render's budget); the wrapped filter gets what it asked for.
        guarded.jinja_pass_arg = _PassArg.context  # type: ignore[attr-defined]
        return guarded

    def xnovu_guard_iter(self, iterable: Any) -> Iterator[Any]:
        """Every `{% for %}` iterates through this, so each iteration checks the deadline."""
        return deadline_checked(iter(iterable))

    def xnovu_str_join(self, seq: Iterable[Any]) -> str:
        parts = tuple(seq)
        check_joined(parts, self.max_text)
        joined = str_join(parts)
        charge(joined, "the ~ operator")
        return joined

    def xnovu_markup_join(self, seq: Iterable[Any]) -> str:
        parts = tuple(seq)
        check_joined(parts, self.max_text)
        joined = markup_join(parts)
        charge(joined, "the ~ operator")
        return joined


def _passed(passes: _PassArg, context: Context) -> Any:
    """What a filter declared with `passes` takes first, from the render's context."""
    if passes is _PassArg.context:
        return context
    if passes is _PassArg.eval_context:
        return context.eval_ctx
    return context.environment


FilterCheck = Callable[[XNovuSandbox, list[Any], dict[str, Any]], None]


def _check_center(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 1, "width", 80)
    if isinstance(width, int):
        check_size("the center filter", width, env.max_text)


def _check_indent(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 1, "width", 4)
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    size, _ = _words(args[0] if args else "", env.max_text)
    lines = args[0].count("\n") + 1 if args and isinstance(args[0], str) else size + 1
    check_size("the indent filter", size + lines * max(per_line, 0), env.max_text)


def _check_format(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    if args:
        check_printf(str(args[0]), (args[1:], kwargs), env.max_text)


def _check_replace(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    if len(args) >= 1:
        s = args[0] if isinstance(args[0], str) else str(args[0])
        old = _arg(args, kwargs, 1, "old", "")
        new = _arg(args, kwargs, 2, "new", "")
        count = _arg(args, kwargs, 3, "count", None)
        check_size("the replace filter", replaced_size(s, old, new, count), env.max_text)


def _check_join(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    if args and not isinstance(args[0], (str, list, tuple)):
        args[0] = list(args[0])  # materialise once, through the deadline-checked iterator
    if args:
        sep = str(_arg(args, kwargs, 1, "d", ""))
        check_joined(args[0], env.max_text, extra=len(sep) * max(len(args[0]) - 1, 0))


def _check_wordwrap(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 1, "width", 79)
    wrap = _arg(args, kwargs, 3, "wrapstring", None) or "\n"
    size, words = _words(args[0] if args else "", env.max_text)
    lines = min(size + 1, size // max(width if isinstance(width, int) else 1, 1) + words)
    check_size("the wordwrap filter", size + lines * len(str(wrap)), env.max_text)


def _check_urlize(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    extra = 40 + sum(
        len(str(_arg(args, kwargs, i, name, None) or "")) for i, name in ((3, "target"), (4, "rel"))
    )
    size, words = _words(args[0] if args else "", env.max_text)
    check_size("the urlize filter", 3 * size + words * extra, env.max_text)


def _check_count_arg(index: int, name: str) -> FilterCheck:
    def check(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
        value = _arg(args, kwargs, index, name, 1)
        if isinstance(value, int) and value > MAX_RANGE:
            raise RenderLimitExceeded(f"{name} is limited to {MAX_RANGE}")

    return check


def _check_sum(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    start = _arg(args, kwargs, 2, "start", 0)
    if not isinstance(start, (int, float)):
        raise RenderError("the sum filter adds numbers only")


_FILTER_CHECKS: dict[str, FilterCheck] = {
    "center": _check_center,
    "indent": _check_indent,
    "format": _check_format,
    "replace": _check_replace,
    "join": _check_join,
    "wordwrap": _check_wordwrap,
    "urlize": _check_urlize,
    "batch": _check_count_arg(1, "linecount"),
    "slice": _check_count_arg(1, "slices"),
    "sum": _check_sum,
}


def source_errors(env: XNovuSandbox, field: str, source: str) -> list[dict[str, Any]]:
    """Syntax problems of one source as `{field, line, message}`; empty when it compiles."""

    def problem(line: int | None, message: str) -> dict[str, Any]:
        return {"field": field, "line": line, "message": message[:500]}

    try:
        tree = env.parse(source)
        loads = list(tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)))
        if loads:
            return [problem(node.lineno, _NOT_LOADABLE) for node in loads]
        env.compile(tree)
    except TemplateSyntaxError as exc:
        return [problem(exc.lineno, exc.message or str(exc))]
    except RecursionError:
        return [problem(None, "the template is nested too deeply to compile")]
    return []
