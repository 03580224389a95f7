"""A Jinja2 sandbox in which every template operation is bounded in time and memory.

Jinja's own sandbox stops attribute-based escapes (private attributes, `str.format`) but leaves
resources open: `'x' * 10**9`, `10**10**10`, nested loops, a recursive macro, a loop printing a large
string, `|center(10**9)` all run to exhaustion, some inside one C call that no signal can
interrupt. Here:

- every single operation that could build a large value (`*`, `**`, `+`, `%`, `~`, filters, method
  calls) is checked *before* it runs, so no one uninterruptible step can allocate more than
  `Limits.value_chars` characters or `Limits.int_bits` bits;
- loop iterations, calls, filters and outputs draw on a per-render budget of `Limits.steps`, and the
  budget checks a wall-clock deadline at every step: this works in any thread (the worker's SIGALRM
  cap only works in the main thread, and the API trial-renders templates in a thread pool);
- everything written out (expressions and the literal text of loop bodies) counts against
  `Limits.output_chars`; macro (and block) nesting is capped at `Limits.macro_depth`;
- `str.format`/`format_map`, `|attr`, string methods that are not on an allowlist, number methods
  such as `int.to_bytes`, and in-place mutation of lists and dicts are unreachable; `lipsum` is gone
  and `range` yields at most `Limits.range_items` numbers.

A limit that trips raises `TemplateLimitError` (a `SecurityError`) with a message naming the limit.
"""

import re
import time
from dataclasses import dataclass

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import BlockReference, Context, LoopContext, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg, pass_context

from campaigns.settings import get_settings

LOOP_FILTER = "mab:loop"  # not a name a template can write (the lexer has no ':' in names)
LARGE_INPUT = 10_000  # characters: past this a filter's run time is worth a look at the clock


class TemplateLimitError(SecurityError):
    """A template tried to use more than its share of time or memory."""


@dataclass(frozen=True)
class Limits:
    steps: int = 100_000  # loop iterations + calls + filters + outputs, per render
    output_chars: int = 1_000_000  # characters written, per render of one template part
    value_chars: int = 1_000_000  # characters of any one value an operation may build
    range_items: int = 10_000
    int_bits: int = 4_096  # about 1,233 decimal digits
    macro_depth: int = 20
    seconds: float | None = None  # per render; None: MAB_RENDER_TIMEOUT_SECONDS


# Methods a template may call on strings and numbers. Everything else (format, format_map,
# expandtabs, translate, maketrans, encode, to_bytes, ...) is unreachable.
STR_METHODS = frozenset({
    "capitalize", "casefold", "center", "count", "endswith", "find", "index", "isalnum", "isalpha", "isascii",
    "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric", "isprintable", "isspace", "istitle",
    "isupper", "join", "ljust", "lower", "lstrip", "partition", "removeprefix", "removesuffix", "replace",
    "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip",
    "swapcase", "title", "upper", "zfill",
    "escape", "striptags", "unescape",  # markupsafe.Markup
})
NUMBER_ATTRIBUTES = frozenset({"real", "imag", "numerator", "denominator", "is_integer", "conjugate", "bit_length"})


def _too_big(what: str, size: float, cap: int) -> TemplateLimitError:
    return TemplateLimitError(f"{what} would be about {int(size):,} characters (cap {cap:,})")


def value_size(value, cap: int) -> int:
    """Roughly how many characters `value` stands for once printed: a string's length, a container's
    items (walked without recursion, stopping once past `cap`). An undefined value inside a container
    is an error here, as it would be if printed alone (StrictUndefined)."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, (list, tuple, dict, set, frozenset)):
        return _scalar_size(value)
    total, stack = 0, [value]
    while stack and total <= cap:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += 2 * len(item) + 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 * len(item) + 1
            stack.extend(item)
        elif isinstance(item, Undefined):
            item._fail_with_undefined_error()
        else:
            total += _scalar_size(item)
    return total


def _scalar_size(value) -> int:
    if isinstance(value, int):
        return value.bit_length() // 3 + 1  # >= its decimal digits
    return 24 if isinstance(value, float) else 1


class Budget:
    """What one render may still spend. Shared by every context derived from the render's context.
    The hot paths update the counters inline and call `check()` only when a counter is past its cap
    or on every 16th step, when the clock is read: no single step can take long (every operation is
    capped, and a filter over a large input reads the clock at once), and a clock read per step
    would be a visible share of an ordinary email's render time."""

    __slots__ = ("limits", "steps", "output", "depth", "deadline", "seconds", "max_steps", "max_output")

    def __init__(self, limits: Limits, deadline: float | None = None, seconds: float | None = None):
        self.limits = limits
        self.max_steps, self.max_output = limits.steps, limits.output_chars
        self.steps = self.output = self.depth = 0
        if limits.seconds is not None:
            seconds = limits.seconds
        self.seconds = seconds if seconds is not None else _default_seconds()
        own = time.monotonic() + self.seconds
        self.deadline = own if deadline is None else min(own, deadline)

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps or not self.steps & 15:
            self.check()

    def emit(self, chars: int) -> None:
        self.output += chars
        if self.output > self.max_output:
            self.check()

    def check(self) -> None:
        if self.steps > self.max_steps:
            raise TemplateLimitError(
                f"the template ran more than {self.max_steps:,} steps (loop iterations, calls, filters, outputs)"
            )
        if self.output > self.max_output:
            raise TemplateLimitError(f"the template's output exceeds {self.max_output:,} characters")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"the template ran longer than {self.seconds:g} s")


def _default_seconds() -> float:
    return float(get_settings().render_timeout_seconds)


class BudgetedContext(Context):
    def __init__(self, environment, *args, **kwargs):
        super().__init__(environment, *args, **kwargs)
        self.budget = Budget(environment.limits)

    def derived(self, locals=None):
        context = super().derived(locals)
        context.budget = self.budget
        return context


class BoundedCodeGenerator(CodeGenerator):
    """Two changes to the generated Python: every `for` iterates through the `mab:loop` filter (one
    step, plus the literal text of the loop body as output, per iteration), and `~` checks the size
    of what it joins before joining it."""

    def visit_Template(self, node, frame=None):
        for loop in list(node.find_all(nodes.For)):
            cost = sum(len(data.data) for stmt in loop.body for data in stmt.find_all(nodes.TemplateData))
            loop.iter = nodes.Filter(loop.iter, LOOP_FILTER, [nodes.Const(cost)], [], None, None,
                                     lineno=loop.lineno).set_environment(self.environment)
        super().visit_Template(node, frame)

    @optimizeconst
    def visit_Concat(self, node, frame):
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.bounded_concat(context, {join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


@pass_context
def _finalize(context, value):
    budget = context.budget
    budget.steps += 1
    budget.output += len(value) if type(value) is str else value_size(value, budget.max_output)
    if budget.steps > budget.max_steps or budget.output > budget.max_output or not budget.steps & 15:
        budget.check()
    return value


@pass_context
def _loop(context, iterable, cost: int):
    budget = context.budget
    for item in iterable:
        budget.steps += 1
        budget.output += cost
        if budget.steps > budget.max_steps or budget.output > budget.max_output or not budget.steps & 15:
            budget.check()
        yield item


# printf-style conversions: %[(key)][flags][width][.precision][length]type
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])")


def _check_printf(fmt: str, args, cap: int) -> None:
    size = len(fmt) + value_size(args, cap)
    for match in _PRINTF.finditer(fmt):
        for number in match.group(1, 2):
            if number == "*":
                raise TemplateLimitError("'*' widths in % formatting are not allowed")
            if number:
                size += int(number)
    if size > cap:
        raise _too_big("the formatted string", size, cap)


def _width(value) -> int:
    return len(value) if isinstance(value, str) else int(value or 0)


def _check_center(limits, value, args, kwargs):
    width = args[0] if args else kwargs.get("width", 80)
    if _width(width) > limits.value_chars:
        raise _too_big("the padded string", _width(width), limits.value_chars)


def _check_indent(limits, value, args, kwargs):
    width = args[0] if args else kwargs.get("width", 4)
    text = str(value)
    size = len(text) + _width(width) * (text.count("\n") + 1)
    if size > limits.value_chars:
        raise _too_big("the indented string", size, limits.value_chars)


def _check_wordwrap(limits, value, args, kwargs):
    names = ("width", "break_long_words", "wrapstring")
    options = {**dict(zip(names, args, strict=False)), **kwargs}
    text = str(value)
    width = max(int(options.get("width", 79) or 1), 1)
    wrap = len(options.get("wrapstring") or "\n")
    size = len(text) + wrap * (len(text) // width + text.count("\n") + 1)
    if size > limits.value_chars:
        raise _too_big("the wrapped string", size, limits.value_chars)


def _replace_size(text: str, old, new) -> int:
    old, new = str(old), str(new)
    count = len(text) + 1 if old == "" else text.count(old)
    return len(text) + max(0, len(new) - len(old)) * count


def _check_replace(limits, value, args, kwargs):
    old = args[0] if args else kwargs.get("old", "")
    new = args[1] if len(args) > 1 else kwargs.get("new", "")
    if type(value) is str and type(old) is str and type(new) is str and old and len(new) <= len(old):
        return  # cannot grow the input, whose size was checked already
    size = _replace_size(str(value), old, new)
    if size > limits.value_chars:
        raise _too_big("the replaced string", size, limits.value_chars)


def _join_size(items, separator, cap: int) -> int:
    return value_size(items, cap) + len(str(separator)) * max(len(items) - 1, 0)


def _check_join(limits, value, args, kwargs):
    separator = args[0] if args else kwargs.get("d", "")
    size = _join_size(value, separator, limits.value_chars)
    if size > limits.value_chars:
        raise _too_big("the joined string", size, limits.value_chars)


def _check_format(limits, value, args, kwargs):
    _check_printf(str(value), (args, kwargs), limits.value_chars)


def _check_count_argument(position: int, name: str, cap_of):
    def check(limits, value, args, kwargs):
        count = args[position] if len(args) > position else kwargs.get(name, 0)
        if int(count) > cap_of(limits):
            raise TemplateLimitError(f"{name}={count} is more than {cap_of(limits):,}")

    return check


def _check_sum(limits, value, args, kwargs):
    start = args[1] if len(args) > 1 else kwargs.get("start", 0)
    if not isinstance(start, (int, float)):
        raise TemplateLimitError("sum() may only add numbers")


# Jinja's urlize scans each word for trailing punctuation with a regex whose time grows with the
# square of the word's length, in one C call that holds the GIL (8,000 characters of ')': 3 s).
# The sum of the squared lengths of its words is capped: 2,000**2, about 0.2 s.
URLIZE_WORD_COST = 4_000_000
URLIZE_LONG_WORD = 64  # shorter words cost nothing worth counting


def _check_urlize(limits, value, args, kwargs):
    text = str(value)
    extra = sum(len(str(kwargs.get(k) or "")) for k in ("target", "rel")) + 60
    size = 2 * len(text) + (len(text) // 4 + 1) * extra
    if size > limits.value_chars:
        raise _too_big("the linked text", size, limits.value_chars)
    long_words = [len(word) for word in text.split() if len(word) > URLIZE_LONG_WORD]
    if sum(n * n for n in long_words) > URLIZE_WORD_COST:
        raise TemplateLimitError(f"the input of the 'urlize' filter has words too long to scan for links "
                                 f"(longest {max(long_words):,} characters; keep words under 2,000)")


# Filters whose output can grow faster than their input: checked before they run.
FILTER_CHECKS = {
    "center": _check_center,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "replace": _check_replace,
    "join": _check_join,
    "format": _check_format,
    "batch": _check_count_argument(0, "linecount", lambda limits: limits.value_chars),
    "slice": _check_count_argument(0, "slices", lambda limits: limits.range_items),
    "sum": _check_sum,
    "urlize": _check_urlize,
}


def _refuse_attr(*args, **kwargs):
    raise SecurityError("the 'attr' filter is not allowed")


def _guard_filter(name: str, func):
    pass_arg = _PassArg.from_obj(func)
    check = FILTER_CHECKS.get(name)

    @pass_context
    def guarded(context, value, *args, **kwargs):
        budget = context.budget
        budget.steps += 1  # Budget.step(), inline: a filter call is on every email's hot path
        if budget.steps > budget.max_steps or not budget.steps & 15:
            budget.check()
        cap = budget.limits.value_chars
        if name == "join" and not isinstance(value, (str, list, tuple, dict, set, frozenset)):
            value = list(value)  # an iterator: materialised (its source is bounded) so it can be measured
        size = len(value) if type(value) is str else value_size(value, cap)
        for arg in args:
            size += len(arg) if type(arg) is str else value_size(arg, cap)
        if kwargs:
            size += value_size(kwargs, cap)
        if size > cap:
            raise _too_big(f"the input of the '{name}' filter", size, cap)
        if check is not None:
            check(budget.limits, value, args, kwargs)
        if pass_arg is _PassArg.context:
            result = func(context, value, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        if size > LARGE_INPUT:
            budget.check()  # a filter over a large input can take a good fraction of a second: read the clock now
        if type(result) is str and len(result) <= cap:
            return result
        return context.environment.checked(result, f"the result of the '{name}' filter")

    guarded.__name__ = f"bounded_{name}"
    return guarded


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """`ImmutableSandboxedEnvironment` (no in-place mutation of lists, dicts and sets) with the
    limits described in this module."""

    code_generator_class = BoundedCodeGenerator
    context_class = BudgetedContext
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, *, limits: Limits | None = None, **options):
        super().__init__(finalize=_finalize, **options)
        self.limits = limits or Limits()
        self.globals.pop("lipsum", None)
        self.globals["range"] = self.bounded_range
        filters = {name: _guard_filter(name, func) for name, func in self.filters.items() if name != "attr"}
        filters["attr"] = _guard_filter("attr", _refuse_attr)
        filters[LOOP_FILTER] = _loop
        self.filters = filters

    # --- attribute access -------------------------------------------------------------------------

    def is_safe_attribute(self, obj, attr, value) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str):
            return attr in STR_METHODS or not callable(value)
        if isinstance(obj, (int, float, complex)):
            return attr in NUMBER_ATTRIBUTES
        return True

    def wrap_str_format(self, value):
        # Jinja would hand out a sandboxed str.format; here it is refused outright (by
        # is_safe_attribute), which closes the whole family of format-string escapes
        # (CVE-2016-10745, CVE-2019-10906, CVE-2024-56326, CVE-2025-27516).
        return None

    # --- operations -------------------------------------------------------------------------------

    def bounded_range(self, *args):
        numbers = range(*args)
        try:
            count = len(numbers)
        except OverflowError:
            count = float("inf")
        if count > self.limits.range_items:
            raise TemplateLimitError(f"range() of {count:,} numbers (cap {self.limits.range_items:,})")
        return numbers

    def checked(self, value, what: str):
        cap = self.limits.value_chars
        size = value_size(value, cap)
        if size > cap:
            raise _too_big(what, size, cap)
        return value

    def bounded_concat(self, context, join, items):
        context.budget.step()
        cap = self.limits.value_chars
        size = sum(value_size(item, cap) for item in items)
        if size > cap:
            raise _too_big("the ~ concatenation", size, cap)
        return join(items)

    def call_binop(self, context, operator, left, right):
        context.budget.step()
        limits = self.limits
        if operator == "**":
            if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
                bits = abs(left).bit_length() * right
                if bits > limits.int_bits:
                    raise TemplateLimitError(f"{left} ** {right} would have about {int(bits * 0.30103):,} digits")
        elif operator == "*":
            if _is_int(left) and _is_int(right):
                if left.bit_length() + right.bit_length() > limits.int_bits:
                    raise TemplateLimitError("the product would have more than ~1,200 digits")
            else:
                sequence, times = (left, right) if _is_int(right) else (right, left)
                if _is_int(times) and times > 0 and isinstance(sequence, (str, list, tuple)):
                    size = value_size(sequence, limits.value_chars) * times
                    if size > limits.value_chars:
                        raise _too_big("the repetition", size, limits.value_chars)
        elif operator == "+":
            if not (_is_number(left) and _is_number(right)):
                size = value_size(left, limits.value_chars) + value_size(right, limits.value_chars)
                if size > limits.value_chars:
                    raise _too_big("the sum", size, limits.value_chars)
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right, limits.value_chars)
        return self.binop_table[operator](left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (the names mirror Jinja's)
        budget = __context.budget
        budget.step()
        limits = __self.limits
        size = (value_size(args, limits.value_chars) if args else 0) + (
            value_size(kwargs, limits.value_chars) if kwargs else 0)
        if size > limits.value_chars:
            raise _too_big("the arguments of the call", size, limits.value_chars)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            args = _check_str_method(limits, owner, getattr(__obj, "__name__", ""), args, kwargs)
        if isinstance(__obj, (Macro, BlockReference, LoopContext)):
            budget.depth += 1
            try:
                if budget.depth > limits.macro_depth:
                    raise TemplateLimitError(f"macros (or blocks, or recursive loops) nested deeper than "
                                             f"{limits.macro_depth}")
                result = super().call(__context, __obj, *args, **kwargs)
            finally:
                budget.depth -= 1
        else:
            result = super().call(__context, __obj, *args, **kwargs)
        return __self.checked(result, "the result of the call")


def _check_str_method(limits, text: str, name: str, args, kwargs):
    """Check a string method whose result can outgrow its inputs; returns the (maybe
    materialised) positional arguments."""
    cap = limits.value_chars
    if name in ("center", "ljust", "rjust", "zfill") and args and _is_int(args[0]) and args[0] > cap:
        raise _too_big(f"str.{name}()", args[0], cap)
    if name == "replace" and len(args) >= 2:
        size = _replace_size(text, args[0], args[1])
        if size > cap:
            raise _too_big("str.replace()", size, cap)
    if name == "join" and args:
        items = args[0] if isinstance(args[0], (list, tuple)) else list(args[0])
        size = _join_size(items, text, cap)
        if size > cap:
            raise _too_big("str.join()", size, cap)
        args = (items, *args[1:])
    return args


def _is_int(value) -> bool:
    return isinstance(value, int)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, complex))


def render(template, variables: dict, *, deadline: float | None = None) -> str:
    """`template.render(variables)`; `deadline` (a time.monotonic() value) can end it earlier than
    its own time limit."""
    environment = template.environment
    context = template.new_context(variables)
    if deadline is not None:
        context.budget = Budget(environment.limits, deadline)
    try:
        return environment.concat(template.root_render_func(context))
    except Exception:
        environment.handle_exception()


class TemplateSet:
    """Templates rendered together from one set of variables (an email's subject, HTML and text
    parts), with the per-call overhead of `Template.render` paid once per set instead of once per
    template: Jinja2 merges the globals into the variables through a `ChainMap` and copies its keys
    into a set for every render, which cost more than rendering a short subject.

    Nothing is shared that a template could change: the merged variables are each context's
    `parent`, which Jinja2 never writes to (a template's own assignments go to the context's
    `vars`); every part gets a fresh context, eval context and budget (steps, output, macro depth
    are per part, as with `render`), and one deadline covers the whole set, as the worker's
    SIGALRM cap does."""

    def __init__(self, templates):
        # per part: what new_context() would recompute on every render
        self.parts = [(t.environment, t.root_render_func, dict(t.globals), frozenset(t.globals), t.name, t.blocks)
                      for t in templates]

    def render(self, variables: dict, *, deadline: float | None = None) -> list[str]:
        seconds = _default_seconds()
        mine = time.monotonic() + seconds
        deadline = mine if deadline is None else min(mine, deadline)
        out = []
        for environment, root, globals_, globals_keys, name, blocks in self.parts:
            context = _new_context(environment, {**globals_, **variables}, name, blocks, globals_keys)
            context.budget = Budget(environment.limits, deadline, seconds)
            try:
                out.append(environment.concat(root(context)))
            except Exception:
                environment.handle_exception()
        return out


def _new_context(environment, parent: dict, name, blocks, globals_keys) -> BudgetedContext:
    """What `Context.__init__` sets (Jinja2 3.1), from values computed once per template; the
    tests compare the attributes with a context made by `Template.new_context`."""
    context = object.__new__(environment.context_class)
    context.parent = parent
    context.vars = {}
    context.environment = environment
    context.eval_ctx = EvalContext(environment, name)
    context.exported_vars = set()
    context.name = name
    context.globals_keys = set(globals_keys)
    context.blocks = {k: [v] for k, v in blocks.items()}
    return context
