"""Text in, text out: a :class:`TextGenerator` pairs a Transformer with its Tokenizer.

It turns a prompt (optionally wrapped in the model's chat template) into ids,
runs :meth:`loom.llm.model.Transformer.stream` with the call's
:class:`~loom.llm.sampling.SamplingParams`, and turns the new ids back into
text with the tokenizer's incremental stream decoder, so multi-byte characters
split over several tokens are never printed half-way. Generation stops at the
model's EOS ids, the tokenizer's EOS ids and any end-of-turn special token the
vocabulary has (``<|im_end|>``, ``<|eot_id|>``, ...).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from loom.llm.model import Transformer
from loom.llm.sampling import SamplingParams

__all__ = ["DEFAULT_TEMPERATURE", "GenerationStats", "TextGenerator"]

#: Temperature of a :class:`TextGenerator` call that names none (LOOM's default).
DEFAULT_TEMPERATURE = 0.7

#: Special tokens that close a chat turn in common templates.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass
class GenerationStats:
    """Counts and timings of the last generation (for tokens/s reports).

    Attributes
    ----------
    prompt_tokens, new_tokens : int
        Prompt length and number of generated ids.
    prefill_seconds : float
        Time to the first new token (prompt forward + first choice).
    decode_seconds : float
        Time for the remaining ``new_tokens - 1`` tokens.
    """

    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens per second after the first one (0 when fewer than two tokens)."""
        n = self.new_tokens - 1
        return n / self.decode_seconds if n > 0 and self.decode_seconds > 0 else 0.0


class TextGenerator:
    """Generate text from a prompt with a model and its tokenizer.

    Parameters
    ----------
    model : Transformer
        The language model.
    tokenizer : Tokenizer
        Its tokenizer (``encode``, ``decode``, ``stream_decoder``, ``apply_chat_template``).

    Examples
    --------
    >>> gen = TextGenerator(load_transformer(path), load_tokenizer(path))  # doctest: +SKIP
    >>> gen.generate_text("Once upon a time", max_tokens=20, temperature=0)  # doctest: +SKIP
    ', there was a little girl named Lily...'
    """

    def __init__(self, model: Transformer, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.last_stats = GenerationStats()

    def prompt_ids(self, prompt: str, *, chat: bool = False) -> list[int]:
        """Token ids of ``prompt``; with ``chat`` the prompt is one user message in the chat template."""
        if chat:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(prompt, add_special_tokens=True))

    def stop_ids(self) -> list[int]:
        """Ids that end generation: model EOS, tokenizer EOS and end-of-turn tokens."""
        ids = list(self.model.config.eos_token_ids)
        ids += list(getattr(self.tokenizer, "eos_token_ids", []) or [])
        to_id = getattr(self.tokenizer, "token_to_id", None)
        if to_id is not None:
            ids += [i for i in (to_id(t) for t in END_OF_TURN_TOKENS) if i is not None]
        return list(dict.fromkeys(int(i) for i in ids))

    def sampling(
        self, temperature: float | None = None, sampling: SamplingParams | None = None, **options: Any
    ) -> SamplingParams:
        """The :class:`~loom.llm.sampling.SamplingParams` of a call: ``sampling`` (default: temperature
        :data:`DEFAULT_TEMPERATURE`) with ``temperature`` and the other given fields (``top_k=``, ``top_p=``,
        ``seed=``) replaced."""
        params = sampling if sampling is not None else SamplingParams(DEFAULT_TEMPERATURE)
        if temperature is not None:
            options["temperature"] = temperature
        return params.with_options(**options)

    def stream_ids(
        self,
        prompt: str,
        max_tokens: int = 50,
        temperature: float | None = None,
        *,
        sampling: SamplingParams | None = None,
        chat: bool = False,
        **options: Any,
    ) -> Iterator[int]:
        """Yield new token ids for ``prompt``; updates :attr:`last_stats` as it goes.

        Parameters are those of :meth:`generate_text`.
        """
        params = self.sampling(temperature, sampling, **options)
        ids = self.prompt_ids(prompt, chat=chat)
        stats = self.last_stats = GenerationStats(prompt_tokens=len(ids))
        started = time.perf_counter()
        first_at = started
        for token in self.model.stream(ids, max_tokens, params, stop_ids=self.stop_ids()):
            now = time.perf_counter()
            if stats.new_tokens == 0:
                first_at = now
                stats.prefill_seconds = now - started
            stats.new_tokens += 1
            stats.decode_seconds = now - first_at
            yield token

    def stream(
        self,
        prompt: str,
        max_tokens: int = 50,
        temperature: float | None = None,
        *,
        sampling: SamplingParams | None = None,
        chat: bool = False,
        **options: Any,
    ) -> Iterator[str]:
        """Yield the completion as text pieces as soon as they are complete characters.

        Parameters are those of :meth:`generate_text`. Special tokens (the final
        EOS) are not shown.
        """
        decoder = self.tokenizer.stream_decoder(skip_special_tokens=True)
        params = self.sampling(temperature, sampling, **options)
        for token in self.stream_ids(prompt, max_tokens, sampling=params, chat=chat):
            piece = decoder.step(token)
            if piece:
                yield piece
        tail = decoder.flush()
        if tail:
            yield tail

    def generate_text(
        self,
        prompt: str,
        max_tokens: int = 50,
        temperature: float | None = None,
        *,
        sampling: SamplingParams | None = None,
        chat: bool = False,
        **options: Any,
    ) -> str:
        """Complete ``prompt`` and return the new text (without the prompt).

        Parameters
        ----------
        prompt : str
            Input text (a user message when ``chat`` is true).
        max_tokens : int
            Maximum number of new tokens.
        temperature : float, optional
            0 for greedy decoding, > 0 to sample (default: ``sampling``'s, else 0.7).
        sampling : SamplingParams, optional
            Temperature, top-k, top-p and seed in one value.
        chat : bool
            Wrap the prompt with the tokenizer's chat template.
        **options
            Fields of :class:`~loom.llm.sampling.SamplingParams` (``top_k=``, ``top_p=``, ``seed=``).

        Returns
        -------
        str
            The generated continuation.
        """
        new_ids = list(self.stream_ids(prompt, max_tokens, temperature, sampling=sampling, chat=chat, **options))
        return self.tokenizer.decode(new_ids, skip_special_tokens=True)
