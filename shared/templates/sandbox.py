"""The hardened Jinja2 sandbox every XNovu template renders in.

Jinja's `ImmutableSandboxedEnvironment` already refuses private and internal attributes
(`__class__`, `__globals__`, `gi_frame`, ...) and mutation of lists and dicts. Templates are
written by enterprise users, so this environment also bounds what one render may spend:

- Time. Each render runs under a `RenderBudget` whose deadline is checked in every hook the
  sandbox has: attribute and item access, calls, intercepted operators, printed values, each
  iteration of every `{% for %}` loop (the code generator wraps each loop's iterable) and of
  `range()`. A loop that prints nothing is stopped like any other.
- Size. No string or joined buffer may grow past `max_text` characters. `*`, `**`, `+` and `%`
  are intercepted and refused *before* they would build something too large; so are the filters
  and str methods that amplify (`center`, `indent`, `format`, `replace`, `join`, `wordwrap`,
  `urlize`, `batch`, `slice`, `sum` of non-numbers). Turning a container into text is estimated
  first, and every buffer a macro, `{% set %}` block, filter block or `~` builds is checked.
- Surface. `lipsum` is gone, `range` is bounded (100 000 items), `str.format`/`format_map` are
  refused (the `format` filter remains), strings and numbers expose only an allowlist of
  harmless methods, bytes and generators none. There is no loader: `{% include %}`,
  `{% import %}` and `{% extends %}` fail; `xnovu_render('key', {...})` nests templates instead.

The renderer (shared.templates.renderer) turns every failure into a `RenderError`.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
import types
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextlib import contextmanager
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, TemplateNotFound, nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.environment import Environment
from jinja2.exceptions import TemplateSyntaxError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from markupsafe import Markup

MAX_RANGE = 100_000
# Integers in templates stay below this size (about 1 200 decimal digits).
MAX_INT_BITS = 4096

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
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_NOT_LOADABLE = (
    "{% include %}, {% import %} and {% extends %} are not supported; "
    "nest templates with xnovu_render('template_key', {...})"
)


class RenderError(Exception):
    """A template could not be rendered; the notification fails with this reason."""


class TemplateSecurityError(RenderError):
    """The template tried something the sandbox refuses (private attributes, unsafe calls)."""


class RenderLimitExceeded(RenderError):
    """Rendering went over a time, size or nesting limit."""


# (template_key, variables, html) -> rendered body of that template
IncludeFunc = Callable[[str, dict[str, Any], bool], str]


class RenderBudget:
    """What one top-level render may spend; its nested renders share it."""

    __slots__ = ("deadline", "include", "max_depth", "stack", "timeout")

    def __init__(
        self, *, timeout: float, max_depth: int, include: IncludeFunc | None = None
    ) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.max_depth = max_depth
        self.include = include
        # Templates being rendered, outermost first: the cycle and depth checks read it.
        self.stack: list[str] = []

    def check_time(self) -> None:
        """Stop the render once its deadline has passed."""
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(
                f"rendering timed out: it took longer than {self.timeout:g} s"
            )

    @contextmanager
    def nested(self, template_key: str) -> Iterator[None]:
        """Enter a nested template, refusing cycles and nesting deeper than max_depth."""
        if template_key in self.stack:
            chain = [*self.stack[self.stack.index(template_key) :], template_key]
            raise RenderError("template cycle: " + " -> ".join(chain))
        if len(self.stack) > self.max_depth:
            chain = [*self.stack, template_key]
            raise RenderLimitExceeded(
                f"templates nest more than {self.max_depth} levels deep: " + " -> ".join(chain)
            )
        self.stack.append(template_key)
        try:
            yield
        finally:
            self.stack.pop()


_budget: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar(
    "xnovu_render_budget", default=None
)


def current_budget() -> RenderBudget | None:
    """The budget of the render running in this context, if any."""
    return _budget.get()


@contextmanager
def spending(budget: RenderBudget) -> Iterator[RenderBudget]:
    """Make `budget` the one the sandbox hooks charge while the block runs."""
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def _tick() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.check_time()


def _ticking(iterator: Iterator[Any]) -> Iterator[Any]:
    budget = _budget.get()
    if budget is None:
        yield from iterator
        return
    for item in iterator:
        budget.check_time()
        yield item


def _int_bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def _too_large(what: str, limit: int) -> RenderLimitExceeded:
    return RenderLimitExceeded(f"{what} would exceed the limit of {limit} characters")


class GuardedRange:
    """`range()` for templates: bounded in length, and its iteration checks the deadline."""

    __slots__ = ("_range",)

    def __init__(self, rng: range) -> None:
        self._range = rng

    def __len__(self) -> int:
        return len(self._range)

    def __iter__(self) -> Iterator[int]:
        return _ticking(iter(self._range))

    def __reversed__(self) -> Iterator[int]:
        return _ticking(reversed(self._range))

    def __contains__(self, item: object) -> bool:
        return item in self._range

    def __getitem__(self, index: Any) -> Any:
        value = self._range[index]
        return GuardedRange(value) if isinstance(value, range) else value

    def __repr__(self) -> str:
        return repr(self._range)


def guarded_range(*args: int) -> GuardedRange:
    """The `range` global: at most MAX_RANGE items."""
    rng = range(*args)
    try:
        length = len(rng)
    except OverflowError:
        length = MAX_RANGE + 1
    if length > MAX_RANGE:
        raise RenderLimitExceeded(f"range() of more than {MAX_RANGE} items")
    return GuardedRange(rng)


@pass_eval_context
def xnovu_render(
    eval_ctx: EvalContext, template_key: Any, variables: Any = None, **kwargs: Any
) -> str:
    """Render the body of another template of the same enterprise, here."""
    budget = _budget.get()
    if budget is None or budget.include is None:
        raise RenderError("xnovu_render() is only available when rendering for an enterprise")
    if not isinstance(template_key, str) or not template_key:
        raise RenderError("xnovu_render() needs a template key as its first argument")
    if variables is None:
        variables = {}
    if not isinstance(variables, Mapping):
        raise RenderError("xnovu_render() takes its variables as a mapping, e.g. {'name': name}")
    html = bool(eval_ctx.autoescape)
    with budget.nested(template_key):
        output = budget.include(template_key, {**variables, **kwargs}, html)
    # Already escaped for HTML where it lands: mark it safe so it is not escaped twice.
    return Markup(output) if html else output


def text_size(value: Any, limit: int) -> int:
    """About how long `str(value)` would be, without building it; stops counting past limit."""
    if isinstance(value, str):
        return len(value)
    # Shared references are counted each time they occur, as str() prints them each time;
    # every step adds at least one, so even a cyclic structure ends the walk past the limit.
    total = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, (bytes, bytearray)):
            total += len(item) + 3
        elif isinstance(item, (Undefined, GuardedRange)):
            total += 20
        else:
            if isinstance(item, Namespace):
                item = object.__getattribute__(item, "_Namespace__attrs")
            if isinstance(item, Mapping):
                total += 2 + 4 * len(item)
                if total <= limit:
                    pending.extend(item.keys())
                    pending.extend(item.values())
            elif isinstance(item, (list, tuple, set, frozenset, KeysView, ValuesView, ItemsView)):
                total += 2 + 2 * len(item)
                if total <= limit:
                    pending.extend(item)
            else:
                total += 64
        if total > limit:
            return total
    return total


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def check_printf(fmt: str, args: Any, limit: int) -> None:
    """Refuse a `%` format whose widths, precisions or arguments would build too much text."""
    size = len(fmt)
    for match in _PRINTF_SPEC.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise RenderLimitExceeded("'*' widths are not supported in format strings")
            if number:
                if len(number) > 9:
                    raise _too_large("the formatted text", limit)
                size += int(number)
    size += text_size(args, limit)
    if size > limit:
        raise _too_large("the formatted text", limit)


def _replaced_size(s: str, old: Any, new: Any, count: Any) -> int:
    old_s, new_s = str(old), str(new)
    found = len(s) + 1 if old_s == "" else s.count(old_s)
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        found = min(found, count)
    return len(s) + found * (len(new_s) - len(old_s))


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
    """Jinja's code generator with each loop's iterable and each `~` routed through checks."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            guard = nodes.Call(
                nodes.EnvironmentAttribute("xnovu_guard_iter"), [loop.iter], [], None, None
            )
            guard.set_lineno(loop.iter.lineno)
            guard.set_environment(self.environment)
            loop.iter = guard
        super().visit_Template(node, frame)

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


class _NoLoader(BaseLoader):
    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, None]:
        raise TemplateNotFound(template, _NOT_LOADABLE)


class XNovuSandbox(ImmutableSandboxedEnvironment):
    """The sandbox: immutable, strict about undefined names, and budgeted."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, *, autoescape: bool, max_text: int) -> None:
        self.max_text = max_text
        super().__init__(
            autoescape=autoescape,
            undefined=StrictUndefined,
            finalize=self._finalize,
            loader=_NoLoader(),
            cache_size=0,
            auto_reload=False,
        )
        self.globals.pop("lipsum", None)
        self.globals["range"] = guarded_range
        self.globals["xnovu_render"] = xnovu_render
        self.filters = {name: self._guard_filter(name, f) for name, f in self.filters.items()}

    # -- checks -------------------------------------------------------------------------

    def check_text(self, value: Any, what: str = "the text of a value") -> None:
        """Refuse a value whose text form would be longer than max_text."""
        if text_size(value, self.max_text) > self.max_text:
            raise _too_large(what, self.max_text)

    def _check_parts(self, parts: Iterable[Any], extra: int = 0) -> None:
        total = extra
        if total > self.max_text:
            raise _too_large("the joined text", self.max_text)
        for part in parts:
            total += len(part) if isinstance(part, str) else text_size(part, self.max_text)
            if total > self.max_text:
                raise _too_large("the joined text", self.max_text)

    def concat(self, parts: Iterable[str]) -> str:
        """Join a buffer (macro output, `{% set %}` blocks, filter blocks), within the limit."""
        items = parts if isinstance(parts, list) else list(parts)
        self._check_parts(items)
        return "".join(items)

    def _finalize(self, value: Any) -> Any:
        # Every {{ ... }} passes here before it becomes text.
        _tick()
        if value is None:
            return ""
        if isinstance(value, str):
            if len(value) > self.max_text:
                raise _too_large("a printed value", self.max_text)
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
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _tick()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            args = self._check_str_call(owner, getattr(obj, "__name__", ""), args)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, str) and len(result) > self.max_text:
            raise _too_large("the result of a call", self.max_text)
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        limit = self.max_text
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                repeats = isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int)
                if repeats and times > 0 and len(seq) * times > limit:
                    raise _too_large("repeating a value", limit)
            if _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
                raise RenderLimitExceeded(f"integers are limited to {MAX_INT_BITS} bits")
        elif operator == "**":
            big = isinstance(right, int) and right > 0 and _int_bits(left) > 1
            if big and right * _int_bits(left) > MAX_INT_BITS:
                raise RenderLimitExceeded(f"integers are limited to {MAX_INT_BITS} bits")
        elif operator == "+":
            sequences = isinstance(left, (str, list, tuple)) and isinstance(
                right, (str, list, tuple)
            )
            if sequences and len(left) + len(right) > limit:
                raise _too_large("adding these values", limit)
        elif operator == "%" and isinstance(left, str):
            check_printf(left, right, limit)
        return super().call_binop(context, operator, left, right)

    def _check_str_call(self, s: str, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        limit = self.max_text
        if name in _PADDING_METHODS and args and isinstance(args[0], int):
            if args[0] > limit:
                raise _too_large(f"str.{name}()", limit)
        elif name == "replace" and len(args) >= 2:
            count = args[2] if len(args) > 2 else -1
            if _replaced_size(s, args[0], args[1], count) > limit:
                raise _too_large("str.replace()", limit)
        elif name == "join" and args:
            items = list(args[0])
            self._check_parts(items, extra=len(s) * max(len(items) - 1, 0))
            return (items, *args[1:])
        return args

    # -- filters, for loops and `~` -----------------------------------------------------

    def _guard_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
        check = _FILTER_CHECKS.get(name)

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            _tick()
            own = list(args[skip:])
            for value in (*own, *kwargs.values()):
                if not isinstance(value, (str, int, float, Undefined)) and value is not None:
                    self.check_text(value, f"the input of the {name} filter")
            if check is not None:
                check(self, own, kwargs)
            result = func(*args[:skip], *own, **kwargs)
            if isinstance(result, str) and len(result) > self.max_text:
                raise _too_large(f"the output of the {name} filter", self.max_text)
            return result

        return guarded

    def xnovu_guard_iter(self, iterable: Any) -> Iterator[Any]:
        """Every `{% for %}` iterates through this, so each iteration checks the deadline."""
        return _ticking(iter(iterable))

    def xnovu_str_join(self, seq: Iterable[Any]) -> str:
        parts = tuple(seq)
        self._check_parts(parts)
        return str_join(parts)

    def xnovu_markup_join(self, seq: Iterable[Any]) -> str:
        parts = tuple(seq)
        self._check_parts(parts)
        return markup_join(parts)


FilterCheck = Callable[[XNovuSandbox, list[Any], dict[str, Any]], None]


def _check_center(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 1, "width", 80)
    if isinstance(width, int) and width > env.max_text:
        raise _too_large("the center filter", env.max_text)


def _check_indent(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 1, "width", 4)
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    size, _ = _words(args[0] if args else "", env.max_text)
    lines = args[0].count("\n") + 1 if args and isinstance(args[0], str) else size + 1
    if size + lines * max(per_line, 0) > env.max_text:
        raise _too_large("the indent filter", env.max_text)


def _check_format(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    if args:
        check_printf(str(args[0]), (args[1:], kwargs), env.max_text)


def _check_replace(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    if len(args) >= 1:
        s = args[0] if isinstance(args[0], str) else str(args[0])
        old = _arg(args, kwargs, 1, "old", "")
        new = _arg(args, kwargs, 2, "new", "")
        count = _arg(args, kwargs, 3, "count", None)
        if _replaced_size(s, old, new, count) > env.max_text:
            raise _too_large("the replace filter", env.max_text)


def _check_join(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    if args and not isinstance(args[0], (str, list, tuple)):
        args[0] = list(args[0])  # materialise once, through the deadline-checked iterator
    if args:
        sep = str(_arg(args, kwargs, 1, "d", ""))
        env._check_parts(args[0], extra=len(sep) * max(len(args[0]) - 1, 0))


def _check_wordwrap(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 1, "width", 79)
    wrap = _arg(args, kwargs, 3, "wrapstring", None) or "\n"
    size, words = _words(args[0] if args else "", env.max_text)
    lines = min(size + 1, size // max(width if isinstance(width, int) else 1, 1) + words)
    if size + lines * len(str(wrap)) > env.max_text:
        raise _too_large("the wordwrap filter", env.max_text)


def _check_urlize(env: XNovuSandbox, args: list[Any], kwargs: dict[str, Any]) -> None:
    extra = 40 + sum(
        len(str(_arg(args, kwargs, i, name, None) or "")) for i, name in ((3, "target"), (4, "rel"))
    )
    size, words = _words(args[0] if args else "", env.max_text)
    if 3 * size + words * extra > env.max_text:
        raise _too_large("the urlize filter", env.max_text)


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


def build_environment(*, autoescape: bool, max_text: int) -> XNovuSandbox:
    """A sandbox for HTML (autoescaped) or plain-text sources."""
    return XNovuSandbox(autoescape=autoescape, max_text=max_text)


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
