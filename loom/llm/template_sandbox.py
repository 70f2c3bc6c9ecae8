"""A Jinja sandbox whose renderings are bounded in time and memory (chat templates are untrusted code).

Jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` stops a template from
reaching Python internals or mutating its inputs, but not from running for hours
(nested loops) or allocating gigabytes (``'a' * 3000000000``, ``s | indent(big)``,
doubling a string in a loop). :class:`BoundedSandbox` adds, per rendering, the
``loom.limits`` budgets ``template_seconds`` (a deadline), ``template_output_chars``
(the largest string / list / output) and ``template_work_chars`` (characters produced in
total, intermediate values included):

* the parsed template is rewritten so that every loop iteration, every output chunk (also
  into ``{% set %}`` blocks and macro bodies) and every ``~`` concatenation pass through a
  checkpoint that enforces the deadline and counts characters;
* every call (functions, methods, macros), filter and ``* + % **`` operation checks the
  deadline; operations that can grow data (repetition, concatenation, padding widths,
  ``replace``, ``join``, ``indent``, format strings, ``sum`` of sequences, integer powers)
  have their result size estimated *before* they run; every result is counted;
* ``range`` is limited to 100,000 items (Jinja's own sandbox limit).

Any violation is a :class:`~loom.errors.ChatTemplateError` naming the limit and how to
raise it. Rendering semantics are unchanged otherwise (same text as the plain sandbox).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from loom.errors import ChatTemplateError
from loom.limits import Limits, get_limits

__all__ = ["BoundedSandbox", "BoundedTemplate", "RenderBudget", "render_bounded"]

MAX_RANGE = 100_000
#: Largest integer (in bits) a template may compute with ``*`` / ``**``.
MAX_INT_BITS = 65_536
_DIGITS = re.compile(r"\d+")
#: Longest input of filters built on regular expressions that are not linear in the worst case.
_REGEX_INPUT = 100_000


class RenderBudget:
    """Deadline and character budgets of one rendering (see :mod:`loom.limits`)."""

    def __init__(self, limits: Limits) -> None:
        self.seconds = limits.template_seconds
        self.deadline = time.monotonic() + limits.template_seconds
        self.max_chars = limits.template_output_chars
        self.work_limit = self.work_left = limits.template_work_chars

    def tick(self) -> None:
        """Raise when the deadline has passed."""
        if time.monotonic() > self.deadline:
            raise ChatTemplateError(
                f"chat template: rendering exceeded the deadline of {self.seconds:g} s "
                "(loom.limits template_seconds; raise it with loom.limits.set_limits(template_seconds=...))"
            )

    def allow(self, size: int, what: str) -> None:
        """Raise when one value of ``size`` characters / items would exceed ``template_output_chars``."""
        if size > self.max_chars:
            raise ChatTemplateError(
                f"chat template: {what} would hold {size:,} characters or items, more than the limit of "
                f"{self.max_chars:,} (loom.limits template_output_chars)"
            )

    def spend(self, size: int) -> None:
        """Count ``size`` produced characters against ``template_work_chars`` (and the deadline)."""
        self.tick()
        self.work_left -= size
        if self.work_left < 0:
            raise ChatTemplateError(
                f"chat template: rendering produced more than {self.work_limit:,} characters in total, "
                "intermediate values included (loom.limits template_work_chars)"
            )


_budget: ContextVar[RenderBudget | None] = ContextVar("loom_template_budget", default=None)


def _current() -> RenderBudget:
    budget = _budget.get()
    if budget is None:  # Template.generate called directly: the size limits, with a fresh deadline
        budget = RenderBudget(get_limits())
    return budget


def _refuse(what: str) -> None:
    raise ChatTemplateError(f"chat template: {what} is not allowed in a chat template (it could run without bound)")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict | bytes) else 0


def _count(value: Any) -> Any:
    size = _size(value)
    if size:
        budget = _current()
        budget.allow(size, "a value")
        budget.spend(size)
    return value


# ------------------------------------------------------------------ size estimates (before running)
def _check_ints(args: Iterable[Any], what: str) -> None:
    budget = _current()
    for value in args:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > budget.max_chars:
            budget.allow(abs(value), what)


def _format_size(template: str, args: Iterable[Any]) -> int:
    """Upper bound of ``template.format(*args)`` / ``template % args``: fields x longest argument + widths."""
    values = list(args)
    longest = max((len(str(v)) if not isinstance(v, int | float) else 32 for v in values), default=0)
    for value in values:
        if isinstance(value, dict | list | tuple):
            longest = max(longest, sum(len(str(v)) for v in value) + 2 * len(value) + 32)
    widths = sum(int(d[:13]) for d in _DIGITS.findall(template))  # a 13-digit width is already refused
    fields = template.count("{") + template.count("%")
    return len(template) + fields * longest + widths


def _str_method_size(name: str, text: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """Result size bound of a growing ``str`` method, or None for methods that do not grow."""
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(len(text), int(args[0]) if args and isinstance(args[0], int) else 0)
    if name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        return len(text) + text.count("\t") * max(int(tab) if isinstance(tab, int) else 8, 0)
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = text.count(args[0]) if args[0] else len(text) + 1
        return len(text) + hits * max(len(args[1]) - len(args[0]), 0)
    if name in ("format", "format_map"):
        return _format_size(text, [*args, *kwargs.values(), *(v for a in args if isinstance(a, dict) for v in a)])
    if name in ("translate", "maketrans"):
        _refuse(f"str.{name} (a table can map one character to any string)")
    return None


def _join_size(separator: str, items: list[Any]) -> int:
    return len(separator) * max(len(items) - 1, 0) + sum(len(str(item)) for item in items)


# ------------------------------------------------------------------ filters
def _filter_size(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """Result size bound of a growing filter, or None."""
    text = value if isinstance(value, str) else None
    if name == "indent" and text is not None:
        width = args[0] if args else kwargs.get("width", 4)
        prefix = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        return len(text) + (text.count("\n") + 1) * max(prefix, 0)
    if name == "center" and text is not None:
        width = args[0] if args else kwargs.get("width", 80)
        return max(len(text), width if isinstance(width, int) else 0)
    if name == "wordwrap" and text is not None:
        wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring") or "\n"
        width = args[0] if args else kwargs.get("width", 79)
        lines = len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
        return len(text) + lines * len(str(wrap))
    if name == "replace" and text is not None and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        hits = text.count(old) if old else len(text) + 1
        return len(text) + hits * max(len(new) - len(old), 0)
    if name == "format" and text is not None:
        return _format_size(text, [*args, *kwargs.values()])
    if name == "join" and isinstance(value, list | tuple | str):
        separator = args[0] if args else kwargs.get("d", "")
        return _join_size(str(separator), list(value))
    if name == "sum" and isinstance(value, list | tuple):
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        return _size(start) + sum(_size(item) for item in value)
    if name == "tojson":
        indent = args[1] if len(args) > 1 else kwargs.get("indent")
        if indent is not None and not (isinstance(indent, int) and 0 <= indent <= 64):
            _refuse(f"tojson(indent={indent!r:.40}) (only indents of 0..64 spaces)")
    if name == "urlize" and (
        len(text or "") > _REGEX_INPUT or any(isinstance(a, str) and len(a) > 1000 for a in (*args, *kwargs.values()))
    ):
        _refuse(f"urlize on {len(text or ''):,} characters (its regular expressions are not linear)")
    if name == "striptags" and text is not None and text.count("<") * len(text) > _REGEX_INPUT**2 // 100:
        _refuse(f"striptags on {len(text):,} characters with {text.count('<'):,} '<' (quadratic)")
    return None


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 + (getattr(func, "jinja_pass_arg", None) is not None)  # (context or eval_ctx,) value

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _current()
        budget.tick()
        _check_ints([*args[skip:], *kwargs.values()], f"the argument of the {name} filter")
        value = args[skip - 1] if len(args) >= skip else None
        estimate = _filter_size(name, value, args[skip:], kwargs)
        if estimate is not None:
            budget.allow(estimate, f"the result of the {name} filter")
        return _count(func(*args, **kwargs))

    return bounded


# ------------------------------------------------------------------ checkpoints inserted in the template
@jinja2.pass_context
def _loop_iterable(context: Any, iterable: Any) -> Any:
    budget = _current()
    budget.tick()
    for item in iterable:
        budget.tick()
        yield item


@jinja2.pass_context
def _emit(context: Any, value: Any) -> Any:
    text = value if isinstance(value, str) else str(value)
    budget = _current()
    budget.allow(len(text), "an output chunk")
    budget.spend(len(text))
    return text


@jinja2.pass_context
def _concat(context: Any, values: list[Any]) -> str:
    parts = [str(v) for v in values]
    budget = _current()
    size = sum(map(len, parts))
    budget.allow(size, "a ~ concatenation")
    budget.spend(size)
    return "".join(parts)


def _filter_node(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Checkpoints(NodeTransformer):
    """Route loop iterations, output chunks and ``~`` through the budget checkpoints."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filter_node(node.iter, "loom_loop")
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_filter_node(child, "loom_emit") for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _filter_node(nodes.List(node.nodes, lineno=node.lineno), "loom_concat")


def _bounded_range(*args: Any) -> range:
    _check_ints(args, "range()")
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise ChatTemplateError(f"chat template: range() of {len(result):,} items; more than the limit {MAX_RANGE:,}")
    return result


class BoundedTemplate(jinja2.Template):
    """A template whose ``render`` runs under :func:`render_bounded`."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        return render_bounded(self, dict(*args, **kwargs))


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Immutable Jinja sandbox with the per-rendering budgets of :class:`RenderBudget`."""

    intercepted_binops = frozenset({"*", "+", "%", "**"})
    template_class = BoundedTemplate

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters.update(loom_loop=_loop_iterable, loom_emit=_emit, loom_concat=_concat)
        self.globals["range"] = _bounded_range

    @staticmethod
    def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` wrapped with the budget checks of the built-in filters (for filters added later)."""
        return _bounded_filter(name, func)

    def compile_template(self, source: str) -> jinja2.Template:
        """``from_string`` with the budget checkpoints inserted into the parsed template."""
        tree = _Checkpoints().visit(self.parse(source))
        tree.set_environment(self)
        return self.template_class.from_code(self, self.compile(tree), self.make_globals(None), None)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _current()
        budget.tick()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if _size(seq) and isinstance(times, int) and not isinstance(times, bool):
                    budget.allow(len(seq) * max(times, 0), "a * repetition")
            if _is_int(left) and _is_int(right) and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
                _refuse(f"an integer product of more than {MAX_INT_BITS} bits")
        elif operator == "**" and _is_int(left) and _is_int(right) and abs(left) > 1 and right > 0:
            if right * abs(left).bit_length() > MAX_INT_BITS:
                _refuse(f"an integer power of more than {MAX_INT_BITS} bits")
        elif operator == "+" and _size(left) and _size(right):
            budget.allow(len(left) + len(right), "a + concatenation")
        elif operator == "%" and isinstance(left, str):
            args = right if isinstance(right, tuple) else (right,)
            _check_ints(args, "a % format argument")
            budget.allow(_format_size(left, args), "a % format")
        return _count(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _current()
        budget.tick()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            _check_ints([*args, *kwargs.values()], f"the argument of str.{name}")
            if name == "join" and args:
                args = (list(args[0]), *args[1:])
                budget.allow(_join_size(owner, args[0]), "the result of str.join")
            estimate = _str_method_size(name, owner, args, kwargs)
            if estimate is not None:
                budget.allow(estimate, f"the result of str.{name}")
        elif getattr(target, "__name__", "") == "generate_lorem_ipsum":
            _check_ints([*args, *kwargs.values()], "lipsum()")
        return _count(super().call(__context, __obj, *args, **kwargs))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def render_bounded(template: jinja2.Template, variables: dict[str, Any], limits: Limits | None = None) -> str:
    """Render ``template`` (compiled by :meth:`BoundedSandbox.compile_template`) under the budgets.

    Returns
    -------
    str
        The rendered text (at most ``template_output_chars`` characters).

    Raises
    ------
    ChatTemplateError
        A budget was exceeded.
    """
    budget = RenderBudget(limits or get_limits())
    token = _budget.set(budget)
    try:
        pieces, size = [], 0
        for piece in template.generate(**variables):
            size += len(piece)
            budget.allow(size, "the rendered text")
            pieces.append(piece)
        return "".join(pieces)
    finally:
        _budget.reset(token)
