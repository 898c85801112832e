"""Captum's LLM workflow with entropy attribution: which prompt tokens each generated token keeps.

:class:`EntropyLLMAttribution` is Captum's ``LLMGradientAttribution`` with
:class:`~captum_entropy.EntropyAttribution` inside: the same ``attribute(TextTokenInput, target)``
call and the same :class:`captum.attr.LLMAttributionResult` (``plot_token_attr``,
``plot_seq_attr``). For each generated token the feature is the log-probability the model gives
it; the attribution of a prompt token is the information, in nats, that this log-probability keeps
about the token (``seq_attr`` sums over the generated tokens).

The log-probability is in nats already, so its scale needs no fitted statistics: ``feature_std``
defaults to 1 and the tolerance τ then reads "the log-probability of each generated token may
move by an RMS of √τ nats" (0.22 nats at the default τ = 0.05).

Example::

    from captum.attr import TextTokenInput
    from captum_entropy import EntropyAttribution
    from captum_entropy.llm import EntropyLLMAttribution

    llm_attr = EntropyLLMAttribution(EntropyAttribution(model, model.transformer.wte), tokenizer)
    result = llm_attr.attribute(TextTokenInput("The capital of France is", tokenizer), target=" Paris")
    result.plot_token_attr()
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LLMAttributionResult, LLMGradientAttribution

from .attr import EntropyAttribution


class EntropyLLMAttribution(LLMGradientAttribution):
    """``LLMGradientAttribution`` for :class:`EntropyAttribution` (see the module docstring).

    Args:
        attr_method: an ``EntropyAttribution`` built on the language model (a Hugging Face
            causal LM) and its token embedding (e.g. ``model.transformer.wte``).
        tokenizer: the model's tokenizer.
    """

    SUPPORTED_METHODS = (EntropyAttribution,)

    def attribute(self, inp: Any, target: Any = None, gen_args: dict | None = None, **kwargs: Any) -> LLMAttributionResult:
        """Like ``LLMGradientAttribution.attribute``; ``kwargs`` go to ``EntropyAttribution.attribute``
        (``tolerance``, ``max_steps``, ...). ``feature_std`` defaults to 1 (nats of log-probability)."""
        kwargs.setdefault("feature_std", torch.tensor(1.0))
        return super().attribute(inp, target=target, gen_args=gen_args, **kwargs)


__all__ = ["EntropyLLMAttribution"]
