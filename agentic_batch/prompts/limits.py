"""Bounds on what one template render may build: characters, loop iterations and seconds.

Jinja's sandbox keeps a template away from Python internals but not from its own operators:
`{{ 'a' * 100000000 }}` ran `abp create` to 1 GB and ten minutes. A template is user input rendered
once per unit, so every place where a template can make something much bigger than what it was
given checks the size it is *about to* build, before building it:

* the intercepted operators `*`, `+`, `%` and `**` (strings, lists, printf widths, huge powers);
* `~` concatenation and every `for` loop (the parse tree is rewritten to call `guarded_concat`
  and `guarded_loop`, which counts iterations and watches the clock);
* calls of string methods (`ljust(10**9)`, `replace`, `join`, `format` widths) and list growth;
* the filters that can amplify (`center`, `indent`, `replace`, `join`, `wordwrap`, `format`,
  `batch`, `slice`) and, after any filter, the size of its result;
* every buffer Jinja joins (macros, `{% set %}` blocks) and the rendered output itself.

The limits come from the environment (read per render): ABP_MAX_PROMPT_CHARS (default 4,000,000,
about a million tokens, the largest model context) for any string or rendered prompt,
ABP_RENDER_SECONDS (default 10) per render, and a fixed budget of loop iterations.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_CHARS = 4_000_000
DEFAULT_SECONDS = 10.0
#: Loop iterations per render; far beyond any prompt, far below ten minutes.
MAX_LOOP_ITERATIONS = 2_000_000
#: Bits a `**` result may have (a 300-digit number is plenty for a prompt).
MAX_POWER_BITS = 1000
#: Groups the batch and slice filters may make (Jinja's own bound on range()).
MAX_GROUPS = 100_000
_CLOCK_EVERY = 1024
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


class RenderLimitError(Exception):
    """A template tried to build more than a render may; the message says what and the limit."""


def _positive_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass
class Budget:
    """What one render may still spend; lives in a context variable for the render's duration."""

    max_chars: int
    seconds: float
    deadline: float = field(default=0.0)
    iterations: int = 0

    def tick(self, count: int = 1) -> None:
        """Count loop iterations; look at the clock every so often."""
        before = self.iterations
        self.iterations += count
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise RenderLimitError(f"loops more than {MAX_LOOP_ITERATIONS:,} times in one render")
        if before // _CLOCK_EVERY != self.iterations // _CLOCK_EVERY:
            self.check_clock()

    def check_clock(self) -> None:
        if self.deadline and time.monotonic() > self.deadline:
            raise RenderLimitError(
                f"took more than {self.seconds:g} s to render (limit ABP_RENDER_SECONDS)"
            )

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_chars:
            raise RenderLimitError(
                f"{what} would be {size:,} characters long; the limit is {self.max_chars:,} "
                "(ABP_MAX_PROMPT_CHARS)"
            )


def new_budget() -> Budget:
    return Budget(
        max_chars=int(_positive_env("ABP_MAX_PROMPT_CHARS", DEFAULT_MAX_CHARS)),
        seconds=_positive_env("ABP_RENDER_SECONDS", DEFAULT_SECONDS),
    )


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("abp_render_budget", default=None)


def current() -> Budget:
    """The active render's budget; outside a render (compile-time folding) a fresh one without a clock."""
    return _BUDGET.get() or new_budget()


@contextlib.contextmanager
def render_budget() -> Iterator[Budget]:
    """Give the render in this block its own budget and deadline."""
    budget = new_budget()
    budget.deadline = time.monotonic() + budget.seconds
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def weight(value: Any, limit: int) -> int:
    """About how many characters `str(value)` makes, counting only until it passes `limit`.

    Walking a nested list costs what it walks, never more than the limit allows, whereas `str()` of
    a list holding one big string many times would build all of it.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item) + 2
        elif isinstance(item, Mapping):
            total += 2 + 2 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
        else:
            total += 8
        if total > limit:
            return total
    return total


def check_value(value: Any, what: str) -> Any:
    """Refuse a value whose text would pass the limit; returns it otherwise."""
    if isinstance(value, str):
        current().check_size(len(value), what)
    elif isinstance(value, (list, tuple, dict, set)):
        budget = current()
        budget.check_size(weight(value, budget.max_chars), what)
    return value


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 0


def _printf_width(template: str, args: Any) -> None:
    """Refuse `%` formatting whose widths or precisions would pad past the limit."""
    budget = current()
    star_values = list(args) if isinstance(args, tuple) else [args]
    for match in _PRINTF_SPEC.finditer(template):
        for number in match.groups():
            if number == "*":
                ints = [a for a in star_values if isinstance(a, int)]
                size = max(ints, default=0)
            elif number:
                size = int(number)
            else:
                continue
            budget.check_size(size, "a %-format width")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Before `left <operator> right`: the size it would have."""
    budget = current()
    budget.check_clock()
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                per_copy = weight(seq, budget.max_chars) if isinstance(seq, (list, tuple)) else len(seq)
                budget.check_size(per_copy * max(times, 0), f"repeating a {type(seq).__name__}")
    elif operator == "+":
        budget.check_size(_length(left) + _length(right), "joining two values with +")
    elif operator == "%" and isinstance(left, str):
        _printf_width(left, right)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        bits = max(abs(left).bit_length() - 1, 1) * right if abs(left) > 1 else 0
        if bits > MAX_POWER_BITS:
            raise RenderLimitError(f"{left} ** {right} is too large a number to render")


def check_result(result: Any, what: str) -> Any:
    """After an operation: the value it built (cheap for strings; bounded walk for containers)."""
    if isinstance(result, str):
        current().check_size(len(result), what)
        return result
    return check_value(result, what)


def guarded_concat(*parts: Any) -> str:
    """`a ~ b ~ c`, refusing before it joins more than the limit."""
    budget = current()
    texts = [part if isinstance(part, str) else str(check_value(part, "a value joined with ~")) for part in parts]
    budget.check_size(sum(map(len, texts)), "joining values with ~")
    return "".join(texts)


def guarded_join(pieces: Iterable[str]) -> str:
    """Jinja's `concat` for buffers (macros, set blocks, filter blocks): count before joining."""
    pieces = list(pieces)
    budget = current()
    budget.check_clock()
    budget.check_size(sum(map(len, pieces)), "the text of a block or macro")
    return "".join(pieces)


def guarded_loop(iterable: Any) -> Iterator[Any]:
    """The iterable of a `for` loop, counting iterations against the render's budget."""
    budget = current()
    for element in iterable:
        budget.tick()
        yield element


# ----------------------------------------------------------------------------------- calls, filters

#: str methods whose integer arguments are widths the result will pad to.
_WIDTH_METHODS = {"ljust", "rjust", "center", "zfill", "expandtabs"}


def check_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Before a call from a template: widths and growth of string methods."""
    budget = current()
    budget.check_clock()
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    wrapped = getattr(func, "__wrapped__", None)  # the sandbox's wrapper of str.format/format_map
    template = getattr(wrapped, "__self__", None)
    if isinstance(template, str) and name in ("format", "format_map"):
        _check_format_specs(template, args, kwargs)
    elif isinstance(owner, str):
        if name in _WIDTH_METHODS:
            for arg in (*args, *kwargs.values()):
                if isinstance(arg, int):
                    size = arg * (owner.count("\t") + 1) if name == "expandtabs" else arg
                    budget.check_size(size, f"str.{name}()")
        elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            _check_replace(owner, args[0], args[1])
        elif name == "join" and args:
            _check_join(owner, args[0])


def _check_format_specs(template: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """`'{:>999999999}'.format(x)` or a width taken from an argument (`'{0:{1}}'`): refuse before."""
    budget = current()
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # malformed: str.format reports it
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        for number in _DIGITS.findall(spec):
            budget.check_size(int(number), "a format width")
        if "{" in spec:
            values = [*args, *kwargs.values()]
            if args and isinstance(args[0], Mapping):
                values.extend(args[0].values())
            for value in values:
                if isinstance(value, int):
                    budget.check_size(value, "a format width")


def check_after_call(func: Any, result: Any) -> Any:
    """After a call: the result's size, and a list or dict it grew in place (`l.extend(l)`)."""
    owner = getattr(func, "__self__", None)
    if isinstance(owner, (list, dict, set)):
        current().check_size(len(owner), f"the {type(owner).__name__} grown by .{getattr(func, '__name__', '')}()")
    return check_result(result, "the result of a call") if isinstance(result, str) else result


def _check_replace(text: str, old: str, new: str) -> None:
    hits = text.count(old) if old else len(text) + 1
    current().check_size(len(text) + hits * max(len(new) - len(old), 0), "the replaced text")


def _check_join(separator: str, items: Any) -> None:
    if isinstance(items, (list, tuple)):
        budget = current()
        size = weight(items, budget.max_chars) + len(separator) * max(len(items) - 1, 0)
        budget.check_size(size, "the joined text")


def _filter_precheck(name: str, bound: inspect.BoundArguments) -> None:
    budget = current()
    arguments = bound.arguments
    value = arguments.get("value", arguments.get("s"))
    if name in ("batch", "slice"):
        for key in ("linecount", "slices"):
            number = arguments.get(key)
            if isinstance(number, int) and number > MAX_GROUPS:
                raise RenderLimitError(f"the {name} filter's {key} {number:,} is over {MAX_GROUPS:,}")
    elif name in ("center", "indent"):
        for key in ("width",):
            number = arguments.get(key)
            if isinstance(number, int):
                lines = value.count("\n") + 1 if name == "indent" and isinstance(value, str) else 1
                budget.check_size(number * lines, f"the {name} filter's {key}")
            elif isinstance(number, str):
                lines = value.count("\n") + 1 if isinstance(value, str) else 1
                budget.check_size(len(number) * lines, f"the {name} filter's {key}")
    elif name == "replace" and isinstance(value, str):
        old, new = arguments.get("old"), arguments.get("new")
        if isinstance(old, str) and isinstance(new, str):
            _check_replace(value, old, new)
    elif name == "join" and arguments.get("attribute") is None:
        separator = arguments.get("d", "")
        _check_join(separator if isinstance(separator, str) else "", value)  # lists only: never a generator
    elif name == "wordwrap" and isinstance(value, str):
        wrap = arguments.get("wrapstring")
        if isinstance(wrap, str):
            budget.check_size(len(value) + len(value.split()) * len(wrap), "the wordwrap filter's result")
    elif name == "format" and isinstance(value, str):
        _printf_width(value, tuple(arguments.get("args", ())))


def guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap one filter: pre-checks for the amplifying ones, a size check of every result."""
    if not hasattr(func, "__dict__"):
        return func  # a builtin (abs, len): nothing it returns can grow
    amplifying = name in ("center", "indent", "batch", "slice", "replace", "join", "wordwrap", "format")
    # An async-variant filter (join, slice, ...) takes an eval context first and hands the rest to
    # the sync function in __wrapped__ (without it, unless that function asks for it too).
    target = getattr(func, "__wrapped__", func) if getattr(func, "jinja_async_variant", False) else func
    drop = 1 if target is not func and not hasattr(target, "jinja_pass_arg") else 0
    signature = inspect.signature(target)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if amplifying:
            try:
                bound = signature.bind(*args[drop:], **kwargs)
            except TypeError:
                bound = None  # let the filter itself report its wrong arguments
            if bound is not None:
                _filter_precheck(name, bound)
        result = func(*args, **kwargs)
        if isinstance(result, str):
            current().check_size(len(result), f"the result of the {name} filter")
        return result

    guarded.__dict__.update(func.__dict__)  # keeps Jinja's pass_context/pass_environment marks
    guarded.__name__ = getattr(func, "__name__", name)
    guarded.__doc__ = func.__doc__
    return guarded
