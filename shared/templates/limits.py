"""What one render may spend: time, nesting depth, and the size of what it builds.

Templates are written by enterprise users, so the sandbox (shared.templates.sandbox) charges
every render to these bounds:

- Time. Each render runs under a `RenderBudget` whose deadline `check_deadline` checks in every
  hook the sandbox has: attribute and item access, calls, intercepted operators, printed values,
  each iteration of every `{% for %}` loop and of `range()` (`deadline_checked`). A loop that
  prints nothing is stopped like any other.
- Depth. Nested templates share their caller's budget, whose stack refuses cycles and nesting
  deeper than `max_depth`.
- Size. No string or joined buffer may grow past `max_text` characters. The checks here work out
  what `*`, `**`, `+`, `%`, a join or an amplifying str method would build and refuse it *before*
  it is built; `text_size` estimates the text form of a container without building it. Integers
  stay below MAX_INT_BITS bits and `range()` below MAX_RANGE items.
- Memory. Bounding each value is not enough: a render can build many of them (a hundred
  thousand strings of a megabyte each, `map`ped from a range, took a worker to 3.5 GB within its
  time limit). So every value the sandbox's hooks build (a filter's or call's result, each item
  a filter's generator yields, an intercepted operator's result, a slice, a joined buffer) is
  charged, by its `sys.getsizeof`, to the render's byte budget (`max_bytes`,
  TEMPLATE_MAX_MEMORY_BYTES), and a value whose size is known beforehand (`check_size`) is
  refused before it is built when it would not fit. The charge is of bytes built, never given
  back: an upper bound of what the render can hold at once, whatever Python frees meanwhile.
  Containers count their own size, not their items' (those were charged when they were built,
  or belong to the payload). Going over fails the render alone (`RenderMemoryExceeded`); the
  process never comes near it (docs/architecture.md, "Rendering").
- Sharing. A render on a thread other than the main one (a preview or a bridge step in the
  API) gives the GIL away once every PAUSE_EVERY_SECONDS (`time.sleep(0)` from the deadline
  check): rendering for seconds, it otherwise held the event loop off for up to Python's switch
  interval (5 ms) at each of a request's many hand-overs. Each pause costs about 0.1 ms, so a
  long render takes some 10 % longer; a worker's task renders on its main thread and never
  pauses. A watch (`watched`) is told when a render has
  run past its `slow_at`: the worker's fairness (shared/notifications/fairness.py).
- Low priority. The worker runs the renders of an enterprise whose renders are slow on a thread
  of the lowest CPU priority (fairness.py), where they may get little CPU while the machine is
  busy with everyone else's work. There the timeout counts the thread's CPU time, so a slow
  template is not failed for the machine being busy, up to LOW_PRIORITY_WALL_FACTOR times the
  timeout in real time.
"""

from __future__ import annotations

import contextvars
import math
import re
import sys
import threading
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

from jinja2.runtime import Undefined
from jinja2.utils import Namespace

from shared.templates.errors import RenderError, RenderLimitExceeded, RenderMemoryExceeded

T = TypeVar("T")

MAX_RANGE = 100_000
# How often a long render lets other threads of its process run (see Sharing above).
PAUSE_EVERY_SECONDS = 0.001
# On a low-priority thread, a render gets its timeout in CPU time within this many timeouts.
LOW_PRIORITY_WALL_FACTOR = 4
# Integers in templates stay below this size (about 1 200 decimal digits).
MAX_INT_BITS = 4096

_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")

# (template_key, variables, html) -> rendered body of that template
IncludeFunc = Callable[[str, dict[str, Any], bool], str]

_thread = threading.local()


def time_renders_by_cpu() -> None:
    """Renders on the calling thread (a low-priority one) count CPU time against their
    timeout, within LOW_PRIORITY_WALL_FACTOR timeouts of real time."""
    _thread.by_cpu = True


def renders_timed_by_cpu() -> bool:
    """Whether the calling thread's renders count CPU time (`time_renders_by_cpu`)."""
    return getattr(_thread, "by_cpu", False)


class RenderBudget:
    """What one top-level render may spend; its nested renders share it."""

    __slots__ = (
        "cpu_from", "deadline", "include", "max_bytes", "max_depth", "pause_at", "spent_bytes",
        "stack", "timeout", "wall_deadline", "watch",
    )  # fmt: skip

    def __init__(
        self,
        *,
        timeout: float,
        max_depth: int,
        max_bytes: int,
        include: IncludeFunc | None = None,
    ) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        # Timed by CPU: `deadline` is when the timeout would be spent at full speed, moved on
        # by the CPU time not had, up to `wall_deadline`.
        self.cpu_from = time.thread_time() if renders_timed_by_cpu() else None
        self.wall_deadline = self.deadline + timeout * (LOW_PRIORITY_WALL_FACTOR - 1)
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.spent_bytes = 0
        self.include = include
        self.watch = _watch.get()
        # A render on the main thread (a worker's task) has nothing of its process to let run.
        shared = threading.current_thread() is not threading.main_thread()
        self.pause_at = time.monotonic() + PAUSE_EVERY_SECONDS if shared else math.inf
        # Templates being rendered, outermost first: the cycle and depth checks read it.
        self.stack: list[str] = []

    def check_time(self) -> None:
        """Stop the render once its deadline has passed; tell the watch once it turns slow;
        now and then, let other threads run."""
        now = time.monotonic()
        if now > self.deadline:
            self._past_deadline(now)
        watch = self.watch
        if watch is not None and now > watch.slow_at:
            watch.slow()
        if now > self.pause_at:
            self.pause_at = now + PAUSE_EVERY_SECONDS
            time.sleep(0)  # lets a thread waiting for the GIL (the event loop) take it

    def _past_deadline(self, now: float) -> None:
        if self.cpu_from is None:
            raise RenderLimitExceeded(
                f"rendering timed out: it took longer than {self.timeout:g} s"
            )
        left = self.timeout - (time.thread_time() - self.cpu_from)
        if left <= 0:
            raise RenderLimitExceeded(
                f"rendering timed out: it took longer than {self.timeout:g} s of CPU time"
            )
        if now >= self.wall_deadline:
            wall = self.timeout * LOW_PRIORITY_WALL_FACTOR
            raise RenderLimitExceeded(
                f"rendering timed out: it had less than {self.timeout:g} s of CPU time in"
                f" {wall:g} s (its enterprise's renders run at low priority while they are slow)"
            )
        self.deadline = min(now + left, self.wall_deadline)

    def check_room(self, size: int, what: str) -> None:
        """Refuse building `what` of `size` bytes when the render has not that much left."""
        if self.spent_bytes + size > self.max_bytes:
            raise RenderMemoryExceeded(
                f"rendering would use more than {self.max_bytes} bytes of memory "
                f"(TEMPLATE_MAX_MEMORY_BYTES): {what} needs {size} more, "
                f"{self.spent_bytes} were used already"
            )

    def charge(self, size: int, what: str) -> None:
        """Count `size` bytes the render built; past max_bytes the render stops."""
        self.spent_bytes += size
        if self.spent_bytes > self.max_bytes:
            raise RenderMemoryExceeded(
                f"rendering used more than {self.max_bytes} bytes of memory "
                f"(TEMPLATE_MAX_MEMORY_BYTES), the last {size} by {what}"
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


class SlowWatch(Protocol):
    """Told when the renders it watches have run past `slow_at` (time.monotonic()); `slow()`
    may stop them by raising, and moves `slow_at` to when it wants to hear again."""

    slow_at: float

    def slow(self) -> None: ...


_budget: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar(
    "xnovu_render_budget", default=None
)
_watch: contextvars.ContextVar[SlowWatch | None] = contextvars.ContextVar(
    "xnovu_render_watch", default=None
)


@contextmanager
def _setting(var: contextvars.ContextVar[Any], value: T) -> Iterator[T]:
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def watched(watch: SlowWatch) -> AbstractContextManager[SlowWatch]:
    """Every render started in the block checks `watch` with its deadline."""
    return _setting(_watch, watch)


def current_budget() -> RenderBudget | None:
    """The budget of the render running in this context, if any."""
    return _budget.get()


def spending(budget: RenderBudget) -> AbstractContextManager[RenderBudget]:
    """Make `budget` the one the sandbox hooks charge while the block runs."""
    return _setting(_budget, budget)


def check_deadline() -> None:
    """Stop the render running in this context once its deadline has passed."""
    budget = _budget.get()
    if budget is not None:
        budget.check_time()


def deadline_checked(iterator: Iterator[Any], charge_as: str | None = None) -> Iterator[Any]:
    """The items of `iterator`, checking the running render's deadline before each; with
    `charge_as`, the containers among them are charged to its memory budget (see `charged`)."""
    budget = _budget.get()
    if budget is None:
        yield from iterator
        return
    for item in iterator:
        budget.check_time()
        if charge_as is not None and isinstance(item, (list, tuple, dict, set, frozenset)):
            budget.charge(sys.getsizeof(item), charge_as)
        yield item


def too_large(what: str, limit: int) -> RenderLimitExceeded:
    """The error for `what` growing past `limit` characters."""
    return RenderLimitExceeded(f"{what} would exceed the limit of {limit} characters")


def check_size(what: str, size: int, limit: int) -> None:
    """Refuse building `what` of `size` characters: over `limit`, or more than the running
    render has left of its memory budget (a character is at least a byte)."""
    if size > limit:
        raise too_large(what, limit)
    check_room(what, size)


def check_room(what: str, size: int) -> None:
    """Refuse building `what` of `size` bytes when the running render has not that much left."""
    budget = _budget.get()
    if budget is not None:
        budget.check_room(size, what)


# What `footprint` measures: values a hook may build. Anything else (a loop object, a macro,
# a namespace) is small or was built of charged values.
_SIZED = (str, bytes, bytearray, list, tuple, dict, set, frozenset, int, float)


def footprint(value: Any) -> int:
    """The bytes `value` itself takes (a container's, not its items'); 0 for other objects."""
    return sys.getsizeof(value) if isinstance(value, _SIZED) else 0


def charge(value: Any, what: str) -> None:
    """Charge a value a hook built to the running render's memory budget."""
    budget = _budget.get()
    if budget is not None and isinstance(value, _SIZED):
        budget.charge(sys.getsizeof(value), what)


def charge_items(values: Iterable[Any], what: str) -> None:
    """Charge the items of a container a hook built along with them (str.split's parts)."""
    budget = _budget.get()
    if budget is not None:
        budget.charge(sum(footprint(value) for value in values), what)


def charged(iterator: Iterator[Any], what: str) -> Iterator[Any]:
    """The items of a filter's generator, each charged as it is consumed (an item a hook built,
    a `map`ped filter's result, was charged already: only containers are charged here, such as
    `batch`'s and `slice`'s lists), checking the deadline before each."""
    return deadline_checked(iterator, charge_as=what)


class GuardedRange:
    """`range()` for templates: bounded in length, and its iteration checks the deadline."""

    __slots__ = ("_range",)

    def __init__(self, rng: range) -> None:
        self._range = rng

    def __len__(self) -> int:
        return len(self._range)

    def __iter__(self) -> Iterator[int]:
        return deadline_checked(iter(self._range))

    def __reversed__(self) -> Iterator[int]:
        return deadline_checked(reversed(self._range))

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


def check_joined(parts: Iterable[Any], limit: int, extra: int = 0) -> None:
    """Refuse joining `parts` (plus `extra` characters of separators) past the limit."""
    total = extra
    if total > limit:
        raise too_large("the joined text", limit)
    for part in parts:
        total += len(part) if isinstance(part, str) else text_size(part, limit)
        if total > limit:
            raise too_large("the joined text", limit)
    check_size("the joined text", total, limit)


def check_printf(fmt: str, args: Any, limit: int) -> None:
    """Refuse a `%` format whose widths, precisions or arguments would build too much text."""
    size = len(fmt)
    for match in _PRINTF_SPEC.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise RenderLimitExceeded("'*' widths are not supported in format strings")
            if number:
                if len(number) > 9:
                    raise too_large("the formatted text", limit)
                size += int(number)
    size += text_size(args, limit)
    check_size("the formatted text", size, limit)


def replaced_size(s: str, old: Any, new: Any, count: Any) -> int:
    """The length of `s.replace(old, new, count)`, without building it."""
    old_s, new_s = str(old), str(new)
    found = len(s) + 1 if old_s == "" else s.count(old_s)
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        found = min(found, count)
    return len(s) + found * (len(new_s) - len(old_s))


def _int_bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def check_binop(operator: str, left: Any, right: Any, limit: int) -> None:
    """Refuse `*`, `**`, `+` or `%` when the result would be too long a text or too big an int."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            repeats = isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int)
            if repeats and times > 0:
                # A list's item is a pointer of 8 bytes; a text's character at least one.
                width = 1 if isinstance(seq, (str, bytes)) else 8
                if len(seq) * times > limit:
                    raise too_large("repeating a value", limit)
                check_room("repeating a value", width * len(seq) * times)
        if _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
            raise RenderLimitExceeded(f"integers are limited to {MAX_INT_BITS} bits")
    elif operator == "**":
        big = isinstance(right, int) and right > 0 and _int_bits(left) > 1
        if big and right * _int_bits(left) > MAX_INT_BITS:
            raise RenderLimitExceeded(f"integers are limited to {MAX_INT_BITS} bits")
    elif operator == "+":
        sequences = isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple))
        if sequences:
            check_size("adding these values", len(left) + len(right), limit)
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right, limit)


def check_str_call(s: str, name: str, args: tuple[Any, ...], limit: int) -> tuple[Any, ...]:
    """Refuse a str method call that would build too much text; returns the arguments to call
    it with (a join's iterable is read once, here)."""
    if name in _PADDING_METHODS and args and isinstance(args[0], int):
        check_size(f"str.{name}()", args[0], limit)
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else -1
        check_size("str.replace()", replaced_size(s, args[0], args[1], count), limit)
    elif name == "join" and args:
        items = list(args[0])
        check_joined(items, limit, extra=len(s) * max(len(items) - 1, 0))
        return (items, *args[1:])
    return args
