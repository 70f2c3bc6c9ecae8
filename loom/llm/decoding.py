"""Generation's token loop: one prefill, then one new token at a time until a stop id or the budget.

:meth:`Transformer.generate <loom.llm.model.Transformer.generate>` and ``stream`` run
:func:`stream_tokens`. Each token is chosen by a :class:`~loom.llm.sampling.Sampler`
(the :class:`~loom.llm.sampling.SamplingParams` of the call and its generator). On a GPU
the decode steps replay one recorded device graph per token (:mod:`loom.llm.gpu_decode`,
which reads back only the chosen id); elsewhere each step is one
:meth:`~loom.llm.model.Transformer.forward` of the new token over the KV cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from loom.llm.gpu_decode import build_decoder
from loom.llm.sampling import Sampler

if TYPE_CHECKING:
    from loom.llm.model import Transformer

__all__ = ["stream_tokens"]


def stream_tokens(
    model: Transformer,
    ids: Sequence[int],
    max_new_tokens: int,
    sampler: Sampler,
    stop_ids: Sequence[int] | None = None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new ids after the prompt ``ids``, each as soon as it is chosen.

    Parameters
    ----------
    model : Transformer
        The language model.
    ids : sequence of int
        ``[T]`` prompt ids (validated even when nothing is generated).
    max_new_tokens : int
        Upper bound on new tokens.
    sampler : Sampler
        How each token is chosen.
    stop_ids : sequence of int, optional
        Generation stops after emitting one of these (the stop id is included).
        Default: the model config's EOS ids; ``[]`` never stops early.
    """
    stops = set(model.config.eos_token_ids if stop_ids is None else stop_ids)
    ids = list(ids)
    if max_new_tokens <= 0:
        model.config.token_ids(ids)  # validated all the same
        return
    xp = model.backend.xp
    state = model.new_state(len(ids) + max_new_tokens)
    token = sampler.choose(model.forward(ids, state, last_only=True)[0], xp)  # prefill -> [V]
    decoder = build_decoder(model, state, sampler) if max_new_tokens > 1 else None
    for step in range(max_new_tokens):
        yield token
        if token in stops or step == max_new_tokens - 1:
            return
        if decoder is not None:  # GPU: one recorded graph per token
            token = decoder.step(token)
        else:
            token = sampler.choose(model.forward([token], state, last_only=True)[0], xp)  # decode -> [V]
