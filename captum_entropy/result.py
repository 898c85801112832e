"""The rich result of an explanation: σ, entropies, convergence, and how to save them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._io import load_tensors, save_tensors
from .entropy import entropy_from_sigma, entropy_to_importance, nats_to_bits


@dataclass
class EntropyResult:
    """Per-sentence answer of :meth:`EntropyAttribution.explain` for one feature.

    Shapes: B sentences, T tokens, K dimensions per token. Padding positions hold NaN.

    Attributes:
        sigma: learned noise std, (B, T, K) per element or (B, T, 1) per token.
        mask: (B, T) bool, True for real tokens.
        max_sigma: (B,) the cap on σ; a word at the cap is fully forgotten.
        saturated: (B, T) bool, the word sits at the cap (all its dimensions).
        steps: (B,) optimisation steps taken.
        converged: (B,) bool, σ settled within the tolerance before ``max_steps``.
        losses: (B, max_steps) loss per step (NaN once a sentence stopped).
        init_sigma: σ before the first step (the linearised warm start), like ``sigma``.
        n_dims: K, the number of dimensions per token.
        layer_shape: shape of the layer value the noise went on, (B, T, ...).
        layer: name of the explained feature (``"output"`` or the target layer's name).
        settings: the settings used, JSON-serialisable.
    """

    sigma: Tensor
    mask: Tensor
    max_sigma: Tensor
    saturated: Tensor
    steps: Tensor
    converged: Tensor
    losses: Tensor
    init_sigma: Tensor
    n_dims: int
    layer_shape: tuple[int, ...] = ()
    layer: str = "output"
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def entropy(self) -> Tensor:
        """(B, T, K): each element's differential entropy ½·log(2πe·σ²) in nats (the attribution)."""
        h = entropy_from_sigma(self.sigma)
        return h.expand(*h.shape[:2], self.n_dims)

    def attribution(self) -> Tensor:
        """:attr:`entropy` shaped like the layer value (what ``attribute`` returns)."""
        return self.entropy.reshape(self.layer_shape) if self.layer_shape else self.entropy

    @property
    def token_entropy(self) -> Tensor:
        """(B, T): each word's entropy H(X_i|s) in nats; low = kept, high = forgotten."""
        return self.entropy.sum(-1)

    @property
    def sentence_entropy(self) -> Tensor:
        """(B,): Σ_i H(X_i|s) over real tokens, nats."""
        return torch.nansum(self.token_entropy, dim=-1)

    @property
    def max_token_entropy(self) -> Tensor:
        """(B,): the entropy of a fully forgotten word (σ at the cap on every dimension)."""
        return self.n_dims * entropy_from_sigma(self.max_sigma)

    def bits(self) -> Tensor:
        """Word entropies in bits."""
        return nats_to_bits(self.token_entropy)

    def importance(self, normalize: bool = True) -> Tensor:
        """(B, T): information kept, ``max_token_entropy − H`` (high = important), NaN on padding.

        With ``normalize`` each row is scaled to [0, 1], ready for Captum's ``visualize_text``.
        """
        return entropy_to_importance(self.token_entropy, self.max_token_entropy, normalize=normalize)

    def save(self, path: str | os.PathLike) -> None:
        """Save to one safetensors file with JSON metadata, written atomically."""
        tensors = {
            name: getattr(self, name)
            for name in ("sigma", "mask", "max_sigma", "saturated", "steps", "converged", "losses", "init_sigma")
        }
        meta = {"n_dims": self.n_dims, "layer_shape": list(self.layer_shape), "layer": self.layer, "settings": self.settings}
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EntropyResult":
        """Load what :meth:`save` wrote."""
        tensors, meta = load_tensors(path)
        return cls(
            **tensors, n_dims=int(meta["n_dims"]), layer_shape=tuple(meta.get("layer_shape", ())),
            layer=meta["layer"], settings=meta.get("settings", {}),
        )
