"""The rich result of an explanation: σ, entropies, convergence, and how to save them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._deprecated import renamed, renamed_init_keyword
from ._io import bad_file, load_tensors, save_tensors
from ._names import OUTPUT, Z95
from .entropy import entropy_from_sigma, nats_to_bits
from .optim_settings import STOP_REASONS


@renamed_init_keyword("layer", "feature")
@dataclass
class EntropyResult:
    """Per-sentence answer of :meth:`EntropyAttribution.attribute_result` for one feature.

    Shapes: B sentences, T tokens, K dimensions per token. σ and the entropies hold NaN on
    padding; the kept information (Captum's orientation: high = important) holds 0 there.

    Attributes:
        sigma: learned noise std, (B, T, K) per element or (B, T, 1) per token.
        mask: (B, T) bool, True for real tokens.
        max_sigma: (B,) the cap on σ; a word at the cap is fully forgotten.
        saturated: (B, T) bool, the word sits at the cap (all its dimensions).
        steps: (B,) optimisation steps taken.
        converged: (B,) bool, the stationarity test passed (every free σ at its optimum, every
            σ at the cap pushed up by the entropy) before ``max_steps``.
        losses: (B, max_steps) objective per step (NaN once a sentence stopped): the penalised
            loss, or minus the mean log σ at the tolerance.
        init_sigma: σ before the first step (the linearised warm start), like ``sigma``.
        stop_reason: (B,) index into :data:`~captum_entropy.optim.STOP_REASONS`; see
            :attr:`stop_reasons`.
        stationarity: (B,) RMS of the step in log σ the optimiser would still take, averaged over
            the last window (``converged`` is ``stationarity < tol``).
        distortion: (B,) the last measured mean squared change of the normalised feature.
        linear_sigma: σ of the linearised closed form (``method="linearized"``), like ``sigma``.
        linear_log_se: Monte-Carlo standard error of ``log(linear_sigma)`` (0 where the
            Jacobian is exact), like ``sigma``.
        n_dims: K, the number of dimensions per token.
        log_sigma_se: standard error of log σ from the noise draws, like ``sigma`` (0 at the
            cap; NaN where it is not measured: ``update="adam"``, or fewer than 5 Newton steps
            averaged). Newton: the delta method on the averaged curvature (docs/method.md).
        ambiguous: (B,) bool: another optimum within ``ambiguity_gap`` keeps other words (the
            sentence has two ways to its feature: redundant evidence).
        ambiguity_gap: (B,) objective gap to the runner-up optimum, nats per dimension (NaN:
            no other optimum was found).
        alternative_sigma: σ of the runner-up optimum, like ``sigma`` (= ``sigma`` if none).
        trades: (B, T) bool: the words whose σ differs between the two optima.
        n_draws: (B,) the noise draws behind each answer.
        layer_shape: shape of the layer value the noise went on, (B, T, ...).
        feature: name of the explained feature (``"output"`` or the target layer's name); the
            ``layer_*`` fields describe the layer that got the noise (``layer`` is the deprecated
            spelling of ``feature``).
        settings: the settings used, JSON-serialisable.
        layer_dtype: dtype of the layer value (attributions come back in it).
    """

    sigma: Tensor
    mask: Tensor
    max_sigma: Tensor
    saturated: Tensor
    steps: Tensor
    converged: Tensor
    losses: Tensor
    init_sigma: Tensor
    stop_reason: Tensor
    stationarity: Tensor
    distortion: Tensor
    linear_sigma: Tensor
    linear_log_se: Tensor
    n_dims: int
    log_sigma_se: Tensor | None = None
    ambiguous: Tensor | None = None
    ambiguity_gap: Tensor | None = None
    alternative_sigma: Tensor | None = None
    trades: Tensor | None = None
    n_draws: Tensor | None = None
    layer_shape: tuple[int, ...] = ()
    feature: str = OUTPUT
    settings: dict[str, Any] = field(default_factory=dict)
    layer_dtype: str = "float32"

    def __post_init__(self) -> None:
        b = self.sigma.shape[0]
        dev = self.sigma.device
        if self.log_sigma_se is None:
            self.log_sigma_se = torch.full_like(self.sigma, math.nan)
        if self.ambiguous is None:
            self.ambiguous = torch.zeros(b, dtype=torch.bool, device=dev)
        if self.ambiguity_gap is None:
            self.ambiguity_gap = torch.full((b,), math.nan, dtype=self.sigma.dtype, device=dev)
        if self.alternative_sigma is None:
            self.alternative_sigma = self.sigma.clone()
        if self.trades is None:
            self.trades = torch.zeros(self.mask.shape, dtype=torch.bool, device=dev)
        if self.n_draws is None:
            self.n_draws = torch.zeros(b, dtype=torch.long, device=dev)

    @property
    def log_sigma_interval(self) -> tuple[Tensor, Tensor]:
        """(low, high) 95 % interval of log σ per word (B, T): ``log σ ± 1.96·SE`` (mean over K)."""
        centre = self.sigma.log().mean(-1)
        half = Z95 * self.log_sigma_se.mean(-1)
        return centre - half, centre + half

    def ordered(self) -> Tensor:
        """(B, T, T) bool: word i is kept more than word j and their 95 % intervals of log σ do
        not overlap (NaN errors: no pair is ordered)."""
        low, high = self.log_sigma_interval
        return (high[:, :, None] < low[:, None, :]) & self.mask[:, :, None] & self.mask[:, None, :]

    @property
    def stop_reasons(self) -> list[str]:
        """Why each sentence stopped: ``"converged"``, ``"max_steps"`` or ``"linearized"``."""
        return [STOP_REASONS[int(i)] for i in self.stop_reason]

    @property
    def nonlinearity(self) -> Tensor:
        """(B, T): optimised σ over linearised σ per word (geometric mean over its dimensions).

        1 where the feature is linear at the noise it tolerates; far from 1 where the answer
        differs from a Jacobian norm (Saliency's regime)."""
        return torch.exp((self.sigma.log() - self.linear_sigma.log()).mean(-1))

    @property
    def entropy(self) -> Tensor:
        """(B, T, K): each element's differential entropy ½·log(2πe·σ²) in nats (the attribution)."""
        h = entropy_from_sigma(self.sigma)
        return h.expand(*h.shape[:2], self.n_dims)

    @property
    def kept(self) -> Tensor:
        """(B, T, K): information the feature keeps about each element, ``log(max_sigma/σ)`` nats.

        The entropy of an element at the cap minus its entropy: ≥ 0, 0 = fully forgotten, and
        0 on padding. Captum's orientation (high = important); ``.sum(-1)`` is :attr:`token_kept`.
        """
        log_ratio = torch.log(self.max_sigma.to(self.sigma.dtype))[:, None, None] - torch.log(self.sigma)
        kept = torch.nan_to_num(log_ratio, nan=0.0).clamp_min(0.0)
        return kept.expand(*kept.shape[:2], self.n_dims)

    @property
    def layer(self) -> str:
        """Deprecated spelling of :attr:`feature` (the explained feature's name)."""
        renamed("EntropyResult.layer", "EntropyResult.feature")
        return self.feature

    @property
    def token_kept(self) -> Tensor:
        """(B, T): information the feature keeps about each token, in nats summed over its
        dimensions (0 = forgotten, 0 on padding); the mirror of :attr:`token_entropy`."""
        return self.kept.sum(-1)

    @property
    def kept_information(self) -> Tensor:
        """Deprecated spelling of :attr:`token_kept`."""
        renamed("EntropyResult.kept_information", "EntropyResult.token_kept")
        return self.token_kept

    def attribution(self, quantity: str = "kept") -> Tensor:
        """:attr:`kept` (or ``quantity="entropy"``: :attr:`entropy`) shaped like the layer value,
        a contiguous tensor of the layer's dtype (what ``attribute`` returns)."""
        if quantity not in ("kept", "entropy"):
            raise ValueError(f"quantity must be 'kept' (information kept, high = important) or 'entropy', got {quantity!r}")
        values = self.kept if quantity == "kept" else self.entropy
        if self.layer_shape:
            values = values.reshape(self.layer_shape)
        return values.to(_dtype(self.layer_dtype)).contiguous()

    @property
    def token_entropy(self) -> Tensor:
        """(B, T): each word's entropy H(X_i|s) in nats; low = kept, high = forgotten."""
        return self.entropy.sum(-1)

    @property
    def sentence_entropy_total(self) -> Tensor:
        """(B,): Σ_i H(X_i|s) over the real tokens (specials included), nats."""
        return torch.nansum(self.token_entropy, dim=-1)

    @property
    def sentence_entropy(self) -> Tensor:
        """Deprecated spelling of :attr:`sentence_entropy_total`."""
        renamed("EntropyResult.sentence_entropy", "EntropyResult.sentence_entropy_total")
        return self.sentence_entropy_total

    @property
    def max_token_entropy(self) -> Tensor:
        """(B,): the entropy of a fully forgotten word (σ at the cap on every dimension)."""
        return self.n_dims * entropy_from_sigma(self.max_sigma)

    def bits(self) -> Tensor:
        """Word entropies in bits."""
        return nats_to_bits(self.token_entropy)

    def importance(self, normalize: bool = True) -> Tensor:
        """(B, T): :attr:`token_kept` (high = important, 0 on padding); with ``normalize``
        each row is divided by its largest value, ready for Captum's ``visualize_text``."""
        kept = self.token_kept
        if not normalize:
            return kept
        top = kept.amax(-1, keepdim=True)
        return kept / torch.where(top > 0, top, torch.ones_like(top))

    def save(self, path: str | os.PathLike) -> None:
        """Save to one safetensors file with JSON metadata, written atomically."""
        tensors = {name: getattr(self, name) for name in _TENSORS + _OPTIONAL}
        meta = {"n_dims": self.n_dims, "layer_shape": list(self.layer_shape), "feature": self.feature,
                "settings": self.settings, "layer_dtype": self.layer_dtype}
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EntropyResult":
        """Load what :meth:`save` wrote (safetensors + JSON: no pickle, nothing executed; the
        metadata holds no paths, and every field is checked before use)."""
        what = "an EntropyResult file"
        tensors, meta = load_tensors(path, what)
        meta.setdefault("feature", meta.pop("layer", None))  # files written before the rename say "layer"
        missing = [n for n in _TENSORS if n not in tensors] + [k for k in ("n_dims", "feature") if meta.get(k) is None]
        if missing:
            raise bad_file(path, what, f"it lacks {missing} (it has tensors {sorted(tensors)[:8]})")
        extra = sorted(set(tensors) - set(_TENSORS) - set(_OPTIONAL))
        if extra:
            raise bad_file(path, what, f"it has unexpected tensors {extra[:8]}")
        n_dims, shape, feature = meta["n_dims"], meta.get("layer_shape", []), meta["feature"]
        settings, dtype = meta.get("settings", {}), meta.get("layer_dtype", "float32")
        if not (isinstance(n_dims, int) and n_dims >= 1 and isinstance(feature, str) and isinstance(settings, dict)
                and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise bad_file(path, what, "its metadata (n_dims, layer_shape, feature, settings) has the wrong types")
        try:
            _dtype(dtype)
        except ValueError as err:
            raise bad_file(path, what, str(err)) from None
        sigma, mask = tensors["sigma"], tensors["mask"]
        batch = mask.shape[0] if mask.dim() == 2 else -1
        if (sigma.dim() != 3 or mask.dim() != 2 or tuple(sigma.shape[:2]) != tuple(mask.shape)
                or any(t.dim() == 0 or t.shape[0] != batch for t in tensors.values())
                or (shape and (math.prod(shape) != math.prod(mask.shape) * n_dims or shape[0] != batch))):
            raise bad_file(path, what, f"its tensors do not fit together (sigma {tuple(sigma.shape)}, mask "
                                       f"{tuple(mask.shape)}, layer_shape {shape}, n_dims {n_dims})")
        return cls(
            **tensors, n_dims=n_dims, layer_shape=tuple(shape), feature=feature, settings=settings, layer_dtype=dtype
        )


_TENSORS = (
    "sigma", "mask", "max_sigma", "saturated", "steps", "converged", "losses", "init_sigma",
    "stop_reason", "stationarity", "distortion", "linear_sigma", "linear_log_se",
)
_OPTIONAL = ("log_sigma_se", "ambiguous", "ambiguity_gap", "alternative_sigma", "trades", "n_draws")  # older files lack them


def _dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (names come from files: nothing else is looked up)."""
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a torch dtype: {name!r}")
    return dtype
