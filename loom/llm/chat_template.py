"""Chat templates: render a model's own Jinja template the way Hugging Face does.

A chat template is untrusted Jinja code shipped with the model (``tokenizer_config.json``,
``chat_template.jinja`` or GGUF ``tokenizer.chat_template``). It is compiled in
:class:`loom.llm.template_sandbox.BoundedSandbox` - Jinja's immutable sandbox plus a
deadline and size budgets per rendering (``loom.limits``) - with ``trim_blocks`` and
``lstrip_blocks`` and the helpers transformers defines (``raise_exception``, a ``tojson``
filter that does not HTML-escape, ``strftime_now``, a restricted ``dict`` and
``namespace``, the ``loopcontrols`` extension and a ``{% generation %}`` block tag), so
the rendered text is identical to ``transformers``' ``apply_chat_template(...,
tokenize=False)``. Everything the template sees is rebuilt from plain JSON types first.
Whatever goes wrong (a syntax error, ``raise_exception``, a budget) is a
:class:`~loom.errors.ChatTemplateError`.

``jinja2`` is imported lazily: it is only needed when a template is rendered.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from loom.errors import ChatTemplateError

__all__ = ["compile_chat_template", "render_chat_template"]

# Names a message's reasoning may arrive under; templates read the first (as transformers aliases them).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def _plain_template_data(value: Any) -> Any:
    """Rebuild ``value`` out of plain JSON types so the sandbox never sees rich objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain_template_data(k): _plain_template_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_template_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain_template_data(item) for item in value)
    if isinstance(value, np.generic):
        return _plain_template_data(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_template_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return f"<{type(value).__name__}>"


def _alias_reasoning_fields(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copy a message's reasoning under every name templates read (as transformers does)."""
    aliased = []
    for message in messages:
        reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        aliased.append(message)
    return aliased


@functools.lru_cache(maxsize=16)
def compile_chat_template(template: str) -> Any:
    """Compile a chat template in the sandboxed environment transformers uses.

    Parameters
    ----------
    template : str
        Jinja source of the chat template.

    Returns
    -------
    jinja2.Template
        The compiled template (cached per source string); its ``render`` runs under the
        rendering budgets.

    Raises
    ------
    ImportError
        When ``jinja2`` is not installed.
    ChatTemplateError
        When the template does not parse.
    """
    try:
        import jinja2
        import jinja2.ext

        from loom.llm.template_sandbox import BoundedSandbox
    except ImportError as exc:  # pragma: no cover - jinja2 is a test dependency
        raise ImportError("rendering a chat template needs jinja2: pip install 'loom-nn[llm]'") from exc

    class GenerationBlock(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}``: renders its body unchanged."""

        tags = frozenset({"generation"})

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_render_body")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _render_body(self, caller: Callable[[], str]) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    class TemplateDict:
        """``dict(...)`` inside templates without exposing the ``dict`` type itself."""

        def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        """A Jinja ``namespace`` that refuses underscore-prefixed attributes."""

        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot store underscore-prefixed attributes ({name!r})"
                )

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = env.bounded_filter("tojson", tojson)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    if not isinstance(template, str):
        raise ChatTemplateError(f"chat template: expected Jinja source text, got {type(template).__name__}")
    try:
        return env.compile_template(template)
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"chat template: cannot compile the template: {type(exc).__name__}: {exc}") from exc


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    continue_final_message: bool | str = False,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    special_tokens: Mapping[str, str] | None = None,
    **template_kwargs: Any,
) -> str:
    """Render one conversation with a chat template, exactly as transformers does.

    Parameters
    ----------
    template : str
        Jinja source of the chat template.
    messages : sequence of dict
        The conversation, e.g. ``[{"role": "user", "content": "Hi"}]``. Keys whose value is
        ``None`` are dropped (transformers does the same).
    add_generation_prompt : bool
        Ask the template to open an assistant turn at the end.
    continue_final_message : bool or str
        Leave the final message open so the model continues it (``True`` continues
        ``"content"``; a string names the field). Not together with ``add_generation_prompt``.
    tools, documents : sequence of dict, optional
        JSON schemas of tools / retrieval documents, passed through to the template.
    special_tokens : dict of str to str, optional
        Named special tokens (``bos_token``, ``eos_token``, ...) made visible to the template.
    **template_kwargs
        Extra template variables; they override ``special_tokens`` of the same name.

    Returns
    -------
    str
        The rendered prompt text.

    Raises
    ------
    ChatTemplateError
        The template does not compile, fails while rendering (``raise_exception``, a type
        error, a sandbox violation) or exceeds a ``loom.limits`` rendering budget.

    Examples
    --------
    >>> render_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}",
    ...                      [{"role": "user", "content": "Hi"}])
    'Hi'
    """
    if not messages:
        raise ChatTemplateError("cannot apply a chat template to an empty conversation")
    if continue_final_message and add_generation_prompt:
        raise ChatTemplateError(
            "continue_final_message cannot be combined with add_generation_prompt; pass "
            "add_generation_prompt=False to continue the final message"
        )
    chat = [{key: value for key, value in dict(message).items() if value is not None} for message in messages]
    chat = _alias_reasoning_fields(_plain_template_data(chat))
    final_text = ""
    if continue_final_message:
        field = continue_final_message if isinstance(continue_final_message, str) else "content"
        final_text = chat[-1].get(field)
        if not isinstance(final_text, str):
            raise ChatTemplateError(f'continue_final_message: the final message has no text "{field}"')
        chat[-1][field] = final_text + _CONTINUE_TAG
    variables = {**dict(special_tokens or {}), **template_kwargs}
    compiled = compile_chat_template(template)
    from loom.llm.template_sandbox import render_bounded

    try:
        rendered = render_bounded(
            compiled,
            {
                "messages": chat,
                "tools": _plain_template_data(list(tools) if tools is not None else None),
                "documents": _plain_template_data(list(documents) if documents is not None else None),
                "add_generation_prompt": add_generation_prompt,
                **_plain_template_data(variables),
            },
        )
    except ChatTemplateError:
        raise
    except Exception as exc:  # the template is untrusted code: whatever it raises is its failure
        raise ChatTemplateError(f"chat template: rendering failed: {type(exc).__name__}: {exc}") from exc
    if continue_final_message:
        tag_at = rendered.rfind(_CONTINUE_TAG.strip())
        if tag_at < 0 or final_text.strip() not in rendered:
            raise ChatTemplateError("continue_final_message: the template dropped the final message; cannot continue")
        if rendered[tag_at : tag_at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
            rendered = rendered[:tag_at]
        else:
            rendered = rendered[:tag_at].rstrip()
    return rendered
