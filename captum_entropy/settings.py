"""What a user can set: the objective, the feature's scale, padding, the optimiser, presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from torch import Tensor

from .optim_settings import OptimSettings, _is_bool, _is_int, _is_real

DEFAULT_TOLERANCE = 0.05
MAX_SIGMA_FACTOR = 10.0


class _Default:
    """A keyword left unset: its default applies (or the preset's); help() shows the default."""

    def __init__(self, shown: str = "default") -> None:
        self.shown = shown

    def __repr__(self) -> str:
        return self.shown


DEFAULT: Any = _Default()


class Unset:
    """The defaults of the keywords that :meth:`EntropyAttribution.attribute` spells out, as
    help() shows them (an unset keyword takes the preset's value, else the default)."""

    tolerance: Any = _Default(str(DEFAULT_TOLERANCE))
    feature_std: Any = _Default("None")
    mask: Any = _Default("None")
    pad_token_id: Any = _Default("None")
    max_sigma: Any = _Default("10 × std")
    method: Any = _Default("'optimize'")
    max_steps: Any = _Default("100")
    n_samples: Any = _Default("64 or 16")
    seed: Any = _Default("0")
    internal_batch_size: Any = _Default("None")
    show_progress: Any = _Default("False")


def given(**kwargs: Any) -> dict[str, Any]:
    """The keywords a caller set (those not left at a :class:`_Default`)."""
    return {k: v for k, v in kwargs.items() if not isinstance(v, _Default)}

# keywords of other Captum methods, and what this method takes instead
CAPTUM_ONLY = {
    "baselines": "the method needs no baseline (the reference is the input itself; the noise scale is learned)",
    "n_steps": "there is no integration path; the optimiser's budget is max_steps (steps) and n_samples "
    "(noise draws per step), its accuracy tol",
    "feature_mask": "every token gets its own σ; padding comes from mask=, pad_token_id= or an attention mask "
    "in additional_forward_args",
    "perturbations_per_eval": "use internal_batch_size= to bound memory",
    "sliding_window_shapes": "every token gets its own σ (no sliding windows)",
    "strides": "every token gets its own σ (no sliding windows)",
    "n_samples_batch_size": "use internal_batch_size= to bound memory",
    "stdevs": "the noise scale σ is what the method learns; wrap it in captum.attr.NoiseTunnel for input noise",
    "nt_type": "wrap it in captum.attr.NoiseTunnel",
    "nt_samples": "wrap it in captum.attr.NoiseTunnel",
}


@dataclass(frozen=True)
class Settings:
    """Everything :meth:`EntropyAttribution.attribute` accepts as keyword settings.

    Besides the fields of :class:`~captum_entropy.optim.OptimSettings`:

    Attributes:
        feature_std: σ_S, the per-element std of the feature over data: a tensor that
            broadcasts to one sentence's (un-selected) feature, a :class:`FeatureStats`, a
            dict keyed by target module or name, or a list (one per target layer). ``None``:
            each sentence's feature is divided by its own root mean square, as in the
            authors' code (with a :class:`NotComparableWarning`).
        mask: (B, T) attention mask (1 = real token). Padding gets no noise, takes no part
            in the loss and is reported as NaN.
        pad_token_id: alternative to ``mask``: tokens of ``inputs[0]`` equal to it are padding.
        tolerance: τ, the default objective: the noise is as large as possible while the
            expected squared change of the normalised feature, averaged over its elements,
            stays at most τ (0.05: an RMS change of 0.22 data standard deviations). The same
            meaning for hidden layers, pooled vectors, logits and any sentence length.
        entropy_weight: λ, the authors' penalised objective instead
            (``D − λ·mean_i mean_k log σ_ik``, their ``rate``); it equals ``tolerance = λ/2``
            where the feature is linear in the noise.
        max_sigma: cap on σ (float or (B,) tensor). ``None``: 10 × the embedding weights'
            std for an ``nn.Embedding`` layer, else 10 × the std of the sentence's layer values
            (the guan2019 preset: 0.5, the authors' ``scale``).
        internal_batch_size: most sentences optimised at once (bounds memory; answers do
            not change).
        seed: base seed; each sentence's noise stream is seeded from it and its content.
        amp: run the forward passes under ``torch.autocast`` (CUDA: bfloat16).
        show_progress: a tqdm progress bar.

    ``check_every`` and ``max_steps``: the stationarity test (and the iterate averaging) works on
    windows of ``check_every`` steps, so a ``check_every`` *you pass* larger than ``max_steps`` is a
    ``ValueError`` (a test that could never run). A ``check_every`` you leave to the default (5) or
    to the preset (guan2019: 100) is never an error and never changed: a shorter run
    (``max_steps=1`` for a quick look) keeps its last iterate, ``stationarity`` is NaN,
    ``converged`` is False and (with ``early_stop``, the default) a :class:`ConvergenceWarning` names
    the sentences. ``method="linearized"`` takes no steps, so there the two are not compared.
    """

    optim: OptimSettings = OptimSettings()
    feature_std: Any = None
    mask: Tensor | None = None
    pad_token_id: int | None = None
    tolerance: float | None = DEFAULT_TOLERANCE
    entropy_weight: float | None = None
    max_sigma: float | Tensor | None = None
    internal_batch_size: int | None = None
    seed: int = 0
    amp: bool = False
    show_progress: bool = False

    @classmethod
    def from_kwargs(cls, preset: str | None = None, **kwargs: Any) -> "Settings":
        base_optim: dict[str, Any] = {}
        base: dict[str, Any] = {}
        if preset == "guan2019":
            base_optim = dict(
                n_samples=1, lr=0.01, lr_decay_steps=None, max_steps=5000, check_every=100,
                early_stop=False, init="random", parametrization="sigmoid", select="min_loss", update="adam",
            )
            base = dict(tolerance=None, entropy_weight=0.1, max_sigma=0.5)
        elif preset is not None:
            raise ValueError(f"unknown preset {preset!r}; choose None (fast default) or 'guan2019'")
        optim_names = {f.name for f in fields(OptimSettings)}
        own_names = {f.name for f in fields(cls)} - {"optim"}
        unknown = set(kwargs) - optim_names - own_names
        for name in sorted(unknown & set(CAPTUM_ONLY)):
            raise TypeError(f"EntropyAttribution takes no {name}=: {CAPTUM_ONLY[name]}")
        if unknown:
            raise TypeError(
                f"unknown setting(s) {sorted(unknown)}; valid: {sorted(optim_names | own_names | {'preset'})}"
            )
        if "entropy_weight" in kwargs and kwargs["entropy_weight"] is not None and "tolerance" not in kwargs:
            base["tolerance"] = None  # the user chose the penalised objective
        if "tolerance" in kwargs and kwargs["tolerance"] is not None and "entropy_weight" not in kwargs:
            base["entropy_weight"] = None
        optim = OptimSettings(**{**base_optim, **{k: v for k, v in kwargs.items() if k in optim_names}})
        if "check_every" in kwargs and optim.method == "optimize" and optim.check_every > optim.max_steps:
            raise ValueError(
                f"check_every={optim.check_every} is larger than max_steps={optim.max_steps}: the stationarity test "
                "(and the iterate averaging) works on windows of check_every steps, so it could never run and no "
                f"sentence could converge; pass check_every <= max_steps (e.g. check_every={max(1, optim.max_steps // 4)}), "
                f"raise max_steps to at least {optim.check_every}, or leave check_every unset"
            )
        s = cls(optim=optim, **{**base, **{k: v for k, v in kwargs.items() if k in own_names}})
        for name in ("tolerance", "entropy_weight"):
            v = getattr(s, name)
            if v is not None and not (_is_real(v) and math.isfinite(v) and v > 0):
                raise ValueError(
                    f"{name} must be a positive number, got {v!r}"
                    + (f" (the default is {DEFAULT_TOLERANCE}: the feature's mean squared change, in units of its "
                       "data std)" if name == "tolerance" else " (the guan2019 preset uses 0.1)")
                )
        if not _is_int(s.seed):
            raise ValueError(
                f"seed must be an int, got {s.seed!r}: each sentence's noise stream is seeded from it and the "
                "sentence's content, so there is no unseeded mode; pass seed=0 (the default) or any other int"
            )
        for name in ("amp", "show_progress"):
            if not _is_bool(getattr(s, name)):
                raise ValueError(f"{name} must be True or False, got {getattr(s, name)!r}")
        if s.pad_token_id is not None and not _is_int(s.pad_token_id):
            raise ValueError(
                f"pad_token_id must be an int (the token id of padding in inputs[0], e.g. tokenizer.pad_token_id), "
                f"got {s.pad_token_id!r}"
            )
        if (s.tolerance is None) == (s.entropy_weight is None):
            raise ValueError(
                "pass tolerance (the default, constrained objective) or entropy_weight (the authors' "
                "penalised objective), not both"
            )
        if s.entropy_weight is None and s.optim.update == "adam":
            raise ValueError("update='adam' solves the penalised objective only: pass entropy_weight=, or use update='newton'")
        if s.optim.update == "fixed_draws" and (s.tolerance is None or s.optim.per_element):
            raise ValueError("update='fixed_draws' solves the tolerance objective with one σ per token: pass tolerance "
                             "(not entropy_weight) and per_element=False, or use update='newton'")
        if s.internal_batch_size is not None and not (_is_int(s.internal_batch_size) and s.internal_batch_size >= 1):
            raise ValueError(f"internal_batch_size must be a positive int or None, got {s.internal_batch_size!r}")
        if s.mask is not None and s.pad_token_id is not None:
            raise ValueError("pass either mask or pad_token_id, not both")
        return s

    def for_feature(self, per_token: bool, n_elements: int) -> "Settings":
        """Settings for one feature, every automatic value decided
        (:meth:`OptimSettings.for_feature`): a fixed-size feature of at most ``exact_jacobian``
        elements (a logit, a probability) is *small*."""
        small = not per_token and n_elements <= self.optim.exact_jacobian
        return replace(self, optim=self.optim.for_feature(small, constrained=self.tolerance is not None))

    def describe(self, preset: str | None) -> dict[str, Any]:
        """JSON-serialisable summary stored with results."""
        return {
            "preset": preset, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.optim).items()},
            "tolerance": self.tolerance,
            "entropy_weight": self.entropy_weight, "seed": self.seed,
            "feature_std": "given" if self.feature_std is not None else "self-normalised",
        }
