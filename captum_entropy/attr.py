"""EntropyAttribution: Guan et al. (2019)'s information measure as a Captum layer attribution.

Thin adapter: formats Captum-style inputs, runs the model with hooks (:mod:`.hooks`) and
hands the per-sentence problems to the optimiser (:mod:`.optim`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from dataclasses import asdict, dataclass, fields, replace as dc_replace
from typing import Any, Callable, Mapping, Sequence

import torch
from captum._utils.common import _format_additional_forward_args, _select_targets
from captum.attr._utils.attribution import LayerAttribution, PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn

from .hooks import capture, capture_all, first_tensor, no_dropout, replace, stoppable
from .optim import OptimSettings, SigmaFit, fit_sigma
from .result import EntropyResult
from .stats import OUTPUT, FeatureStats, floor_std, module_names

DEFAULT_TOLERANCE = 0.05
MAX_SIGMA_FACTOR = 10.0


class NotComparableWarning(UserWarning):
    """Entropies computed without ``feature_std`` are not comparable across sentences or layers."""


class ConvergenceWarning(UserWarning):
    """Some sentences did not pass the stationarity test, or lost every word to the cap."""


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
        if unknown:
            raise TypeError(
                f"unknown setting(s) {sorted(unknown)}; valid: {sorted(optim_names | own_names | {'preset'})}"
            )
        if "entropy_weight" in kwargs and kwargs["entropy_weight"] is not None and "tolerance" not in kwargs:
            base["tolerance"] = None  # the user chose the penalised objective
        if "tolerance" in kwargs and kwargs["tolerance"] is not None and "entropy_weight" not in kwargs:
            base["entropy_weight"] = None
        optim = OptimSettings(**{**base_optim, **{k: v for k, v in kwargs.items() if k in optim_names}})
        s = cls(optim=optim, **{**base, **{k: v for k, v in kwargs.items() if k in own_names}})
        for name in ("tolerance", "entropy_weight"):
            v = getattr(s, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if (s.tolerance is None) == (s.entropy_weight is None):
            raise ValueError(
                "pass tolerance (the default, constrained objective) or entropy_weight (the authors' "
                "penalised objective), not both"
            )
        if s.entropy_weight is None and s.optim.update == "adam":
            raise ValueError("update='adam' solves the penalised objective only: pass entropy_weight=, or use update='newton'")
        if s.internal_batch_size is not None and not (isinstance(s.internal_batch_size, int) and s.internal_batch_size >= 1):
            raise ValueError(f"internal_batch_size must be a positive int or None, got {s.internal_batch_size!r}")
        if s.mask is not None and s.pad_token_id is not None:
            raise ValueError("pass either mask or pad_token_id, not both")
        return s

    def describe(self, preset: str | None) -> dict[str, Any]:
        """JSON-serialisable summary stored with results."""
        return {
            "preset": preset, **asdict(self.optim), "tolerance": self.tolerance,
            "entropy_weight": self.entropy_weight, "seed": self.seed,
            "feature_std": "given" if self.feature_std is not None else "self-normalised",
        }


class EntropyAttribution(LayerAttribution, PerturbationAttribution):
    r"""Per-word information a feature keeps: H(X_i | s) (Guan et al., ICML 2019).

    Gaussian noise ``σ_i·ε`` is added to the output (or input) of ``layer`` for every token
    ``i``; σ is learned so that the feature ``s`` (the model output, one target of it, or
    ``target_layer``'s output) barely changes while the noise is as large as possible. A word
    whose noise can be large is one the feature forgot.

    Args:
        forward_func: the model or any function of ``(*inputs, *additional_forward_args)``.
        layer: the module whose output gets the noise (a BERT's embedding module, or an
            ``nn.Embedding``).
        device_ids: accepted for Captum compatibility; ``nn.DataParallel`` models are not
            supported (pass the wrapped module).
        target_layer: the feature to preserve: ``None`` (model output), a module (its
            output), or a list of modules (one independent optimisation per module).

    Example::

        >>> import torch
        >>> from captum_entropy import EntropyAttribution
        >>> emb = torch.nn.Embedding(20, 8)
        >>> head = torch.nn.Linear(8, 2)
        >>> model = lambda ids: head(emb(ids).mean(1))
        >>> ea = EntropyAttribution(model, emb)
        >>> attr = ea.attribute(torch.tensor([[1, 2, 3]]), feature_std=torch.ones(2), max_steps=50)
        >>> attr.shape, attr.sum(-1).shape    # like the layer output; .sum(-1): word entropy
        (torch.Size([1, 3, 8]), torch.Size([1, 3]))
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: nn.Module,
        device_ids: list[int] | None = None,
        target_layer: nn.Module | Sequence[nn.Module] | None = None,
    ) -> None:
        if isinstance(forward_func, nn.DataParallel):
            raise TypeError("nn.DataParallel is not supported: pass model.module (see docs/usage.md for multi-GPU runs)")
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be an nn.Module, got {type(layer).__name__}")
        targets = list(target_layer) if isinstance(target_layer, (list, tuple, nn.ModuleList)) else [target_layer]
        for t in targets:
            if t is not None and not isinstance(t, nn.Module):
                raise TypeError(f"target_layer must be an nn.Module or a list of them, got {type(t).__name__}")
        if isinstance(target_layer, (list, tuple, nn.ModuleList)) and not targets:
            raise ValueError("target_layer is an empty list")
        PerturbationAttribution.__init__(self, forward_func)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        self.target_layer = target_layer
        self._targets = targets

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        **settings: Any,
    ) -> Tensor | list[Tensor]:
        r"""Entropy attribution shaped like the layer output (or input).

        Element ``(b, t, d)`` is that element's differential entropy ``½·log(2πe·σ²)`` in
        nats, so ``.sum(-1)`` is each word's entropy ``H(X_t|s)``: low = the feature keeps the
        word, high = it forgot it. Padding positions are NaN. With a list ``target_layer``, a
        list of such tensors, one per layer.

        Args:
            inputs: tensor or tuple of tensors, first dimension the batch.
            target: Captum target semantics, applied to the feature (model output, or
                ``target_layer``'s output): int, tuple, tensor or list.
            additional_forward_args: passed to ``forward_func`` after ``inputs``.
            attribute_to_layer_input: put the noise on the layer's input instead of its
                output (works for modules called with keyword arguments).
            **settings: ``preset="guan2019"`` and any field of :class:`Settings` or
                :class:`~captum_entropy.optim.OptimSettings` (``max_steps``, ``lr``, ...).

        Returns:
            tensor (or list of tensors) of entropies in nats.
        """
        results = self.explain(inputs, target, additional_forward_args, attribute_to_layer_input, **settings)
        if isinstance(results, list):
            return [r.attribution() for r in results]
        return results.attribution()

    @log_usage()
    def explain(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        preset: str | None = None,
        **settings: Any,
    ) -> EntropyResult | list[EntropyResult]:
        """Like :meth:`attribute` but returns :class:`EntropyResult` (σ, word entropies,
        convergence flags, loss curves, saturation), one per target layer."""
        cfg = Settings.from_kwargs(preset, **settings)
        args = _format_inputs(inputs)
        extra = _format_additional_forward_args(additional_forward_args) or ()
        batch = args[0].shape[0]
        if batch == 0:
            raise ValueError("inputs are empty: the batch has 0 sentences")
        run = _Runner(self.forward_func, self.layer, attribute_to_layer_input, args, extra, batch, cfg.amp)
        with no_dropout():
            values, clean_features = run.clean(self._targets)
            values3 = values.reshape(batch, values.shape[1], -1) if values.dim() >= 3 else values[..., None]
            mask = _token_mask(cfg, args, values3)
            cap = _max_sigma(cfg, self.layer, attribute_to_layer_input, values3, mask)
            seeds = _sentence_seeds(args, mask, cfg.seed)
            results = []
            for idx, module in enumerate(self._targets):
                problem = _Problem.build(module, clean_features[idx], target, cfg, idx, mask, self._root_names())
                fit = self._optimise(run, problem, values3, mask, cap, seeds, cfg)
                result = EntropyResult(
                    sigma=fit.sigma, mask=mask, max_sigma=cap, saturated=fit.saturated.all(-1) & mask,
                    steps=fit.steps, converged=fit.converged, losses=fit.losses, init_sigma=fit.init_sigma,
                    stop_reason=fit.stop_reason, stationarity=fit.stationarity, distortion=fit.distortion,
                    linear_sigma=fit.linear_sigma, linear_log_se=fit.linear_log_se,
                    n_dims=values3.shape[-1], layer_shape=tuple(values.shape), layer=problem.name,
                    settings=cfg.describe(preset),
                )
                _warn_if_untrustworthy(result, cfg)
                results.append(result)
        return results if isinstance(self.target_layer, (list, tuple, nn.ModuleList)) else results[0]

    # -- internals -------------------------------------------------------------------------

    def _root_names(self) -> dict[int, str]:
        return module_names(self.forward_func)

    def _optimise(
        self, run: "_Runner", problem: "_Problem", values3: Tensor, mask: Tensor, cap: Tensor,
        seeds: list[int], cfg: Settings,
    ) -> SigmaFit:
        batch, dev = values3.shape[0], values3.device
        chunk = cfg.internal_batch_size or batch
        bar = None
        if cfg.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=math.ceil(batch / chunk) * cfg.optim.max_steps, desc=f"entropy[{problem.name}]")
        fits = []
        try:
            for start in range(0, batch, chunk):
                ids = torch.arange(start, min(start + chunk, batch), device=dev)
                gens = [torch.Generator(device=dev).manual_seed(seeds[i]) for i in ids.tolist()]
                done = [0]

                def tick(n: int) -> None:
                    bar.update(n - done[0])
                    done[0] = n

                fits.append(
                    fit_sigma(
                        values3[ids], mask[ids], lambda x, rows, ids=ids: problem.feature(run, x, ids[rows]),
                        problem.clean[ids], problem.fmask.flatten(1)[ids] > 0, cap[ids], gens, cfg.optim,
                        tolerance=None if cfg.tolerance is None else torch.full((len(ids),), float(cfg.tolerance), device=dev),
                        entropy_weight=None if cfg.entropy_weight is None else torch.full((len(ids),), float(cfg.entropy_weight), device=dev),
                        progress=tick if bar is not None else None,
                    )
                )
        finally:
            if bar is not None:
                bar.close()
        return SigmaFit(**{f.name: torch.cat([getattr(x, f.name) for x in fits]) for f in fields(SigmaFit)})


# ---------------------------------------------------------------------------------------------


def _warn_if_untrustworthy(result: EntropyResult, cfg: Settings) -> None:
    """A :class:`ConvergenceWarning` that names the fix when the answer should not be trusted."""
    if cfg.optim.method != "optimize":
        return
    failed = (~result.converged).nonzero().flatten().tolist()
    if failed and cfg.optim.early_stop:
        warnings.warn(
            f"{result.layer}: sentence(s) {failed[:10]}{' ...' if len(failed) > 10 else ''} did not pass the "
            f"stationarity test in max_steps={cfg.optim.max_steps} (result.stationarity: "
            f"{[round(float(result.stationarity[i]), 3) for i in failed[:5]]}, tol={cfg.optim.tol}); raise max_steps "
            "or n_samples, or check result.converged before using these rows",
            ConvergenceWarning,
            stacklevel=4,
        )
    mask = result.mask
    all_capped = ((result.saturated | ~mask).all(1)).nonzero().flatten().tolist()
    if all_capped:
        what = f"tolerance={cfg.tolerance}" if cfg.tolerance is not None else f"entropy_weight={cfg.entropy_weight}"
        warnings.warn(
            f"{result.layer}: every word of sentence(s) {all_capped[:10]} is at the σ cap (fully forgotten): "
            f"the feature stays within {what} even with all words destroyed, or max_sigma is too small; "
            "lower the tolerance (or entropy_weight), or raise max_sigma",
            ConvergenceWarning,
            stacklevel=4,
        )


def _format_inputs(inputs: Any) -> tuple[Tensor, ...]:
    args = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs) if isinstance(inputs, (tuple, list)) else None
    if not args or not all(isinstance(a, Tensor) for a in args):
        raise TypeError("inputs must be a tensor or a non-empty tuple of tensors (batch first)")
    return args


def _take_rows(obj: Any, rows: Tensor, batch: int) -> Any:
    """Index every tensor whose first dimension is the batch with ``rows``; leave the rest."""
    if isinstance(obj, Tensor):
        return obj[rows.to(obj.device)] if obj.dim() > 0 and obj.shape[0] == batch else obj
    if isinstance(obj, tuple):
        return tuple(_take_rows(o, rows, batch) for o in obj)
    if isinstance(obj, list):
        return [_take_rows(o, rows, batch) for o in obj]
    if isinstance(obj, dict):
        return {k: _take_rows(v, rows, batch) for k, v in obj.items()}
    return obj


def _target_rows(target: Any, rows: Tensor) -> Any:
    if isinstance(target, Tensor) and target.numel() > 1:
        return target[rows.to(target.device)]
    if isinstance(target, list):
        return [target[r] for r in rows.tolist()]
    return target


class _Runner:
    """Runs ``forward_func`` on chosen rows, with the layer's value replaced and a feature captured."""

    def __init__(self, forward_func, layer, on_input, args, extra, batch, amp):
        self.forward_func, self.layer, self.on_input = forward_func, layer, on_input
        self.args, self.extra, self.batch, self.amp = args, extra, batch, amp

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if device.type in ("cuda", "cpu") else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def clean(self, targets: list[nn.Module | None]) -> tuple[Tensor, list[Tensor]]:
        """One forward without noise: the layer's values and every target feature."""
        store: dict[Any, Tensor] = {}
        want = {"layer": (self.layer, self.on_input)}
        want.update({i: (m, False) for i, m in enumerate(targets) if m is not None})
        need_output = any(m is None for m in targets)
        with torch.no_grad(), self._autocast(self.args[0].device), capture_all(want, store, stop=not need_output):
            out = stoppable(lambda: self.forward_func(*self.args, *self.extra))
        if "layer" not in store:
            raise ValueError(
                "layer was never called by forward_func: pass a module that the model runs "
                "(e.g. model.bert.embeddings or the nn.Embedding), not a copy or an unused module"
            )
        order = list(store)
        for i, m in enumerate(targets):
            if m is None:
                continue
            if i not in store:
                raise ValueError(f"target_layer[{i}] ({type(m).__name__}) was never called by forward_func")
            if order.index(i) < order.index("layer"):
                raise ValueError(f"target_layer[{i}] ({type(m).__name__}) runs before layer, so it cannot depend on it")
        values = store["layer"].detach()
        self.layer_tail = tuple(values.shape[1:])
        if not values.is_floating_point():
            raise TypeError(
                f"the layer's {'input' if self.on_input else 'output'} is {values.dtype}, not floating point: "
                "noise needs embeddings (e.g. the nn.Embedding's output, not its input ids)"
            )
        if values.dim() < 2 or values.shape[0] != self.batch:
            raise ValueError(f"the layer's value has shape {tuple(values.shape)}; expected (batch={self.batch}, tokens, ...)")
        if not torch.isfinite(values).all():
            raise ValueError("the layer's value contains NaN or inf; check the inputs and the model")
        feats = [first_tensor(out).detach() if m is None else store[i].detach() for i, m in enumerate(targets)]
        return values, feats

    def feature(self, x: Tensor, rows: Tensor, module: nn.Module | None) -> Tensor:
        """Raw feature of ``rows`` when the layer's value is replaced by ``x``."""
        args = _take_rows(self.args, rows, self.batch)
        extra = _take_rows(self.extra, rows, self.batch)

        def inject(v: Tensor) -> Tensor:
            if v.shape != x.shape:
                raise ValueError(
                    f"the layer produced shape {tuple(v.shape)} where {tuple(x.shape)} was expected; "
                    "is it called more than once per forward, or on inputs of another batch size?"
                )
            return x.to(v.dtype)

        store: dict[str, Tensor] = {}
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._autocast(x.device))
            stack.enter_context(replace(self.layer, inject, on_input=self.on_input))
            if module is not None:
                stack.enter_context(capture(module, store, "f", stop=True))
            out = stoppable(lambda: self.forward_func(*args, *extra))
        return store["f"] if module is not None else first_tensor(out)


@dataclass
class _Problem:
    """One feature to preserve: how to select, normalise and mask it."""

    module: nn.Module | None
    name: str
    target: Any
    denom: Tensor  # (B, *feature) normaliser of the selected feature
    fmask: Tensor  # (B, *feature) 1 for elements in the loss, 0 for padding
    clean: Tensor  # (B, M) normalised clean feature
    shape: tuple[int, ...]

    @classmethod
    def build(cls, module, raw, target, cfg, idx, mask, names) -> "_Problem":
        name = OUTPUT if module is None else names.get(id(module), f"target_layer[{idx}]")
        feat = _as_2d(_select(raw, target).float())
        if feat.shape[0] != mask.shape[0]:
            raise ValueError(f"the feature has batch size {feat.shape[0]}, the inputs {mask.shape[0]}")
        fmask = torch.ones_like(feat)
        if feat.dim() >= 3 and feat.shape[1] == mask.shape[1]:  # per-token feature: drop padding
            fmask = fmask * mask.reshape(*mask.shape, *([1] * (feat.dim() - 2))).to(feat.dtype)
        std = _resolve_std(cfg.feature_std, module, idx, raw, target, names)
        if std is None:
            warnings.warn(
                "feature_std not given: each sentence's feature is divided by its own root mean square "
                "(as in the authors' code), so entropies are not comparable across sentences, layers or "
                "models; fit FeatureStats and pass feature_std=",
                NotComparableWarning,
                stacklevel=4,
            )
            ms = (feat.pow(2) * fmask).flatten(1).sum(1) / fmask.flatten(1).sum(1)
            if not (ms > 0).all():
                raise ValueError("the feature is all zeros for some sentence; pass feature_std")
            std = ms.sqrt().reshape(-1, *([1] * (feat.dim() - 1))).expand_as(feat)
        # D = mean over the sentence's feature elements of the squared change in units of σ_S
        count = fmask.flatten(1).sum(1)
        denom = std * count.sqrt().reshape(-1, *([1] * (feat.dim() - 1)))
        clean = (feat / denom * fmask).flatten(1)
        return cls(module, name, target, denom, fmask, clean, tuple(feat.shape[1:]))

    def feature(self, run: _Runner, x: Tensor, rows: Tensor) -> Tensor:
        raw = run.feature(x.reshape(len(rows), *run.layer_tail), rows, self.module)
        feat = _as_2d(_select(raw, _target_rows(self.target, rows)).float())
        return (feat / self.denom[rows] * self.fmask[rows]).flatten(1)


def _as_2d(feat: Tensor) -> Tensor:
    """A scalar feature per sentence (B,) becomes (B, 1): one element, width 1."""
    return feat[:, None] if feat.dim() == 1 else feat


def _select(raw: Tensor, target: Any) -> Tensor:
    try:
        return _select_targets(raw, target)
    except (IndexError, AssertionError, RuntimeError) as err:
        raise ValueError(f"target {target!r} does not select from a feature of shape {tuple(raw.shape)}: {err}") from None


def _resolve_std(feature_std, module, idx, raw, target, names) -> Tensor | None:
    std = feature_std
    if isinstance(std, (list, tuple)):
        std = std[idx]
    if isinstance(std, FeatureStats):
        std = std[std.name_of(module, names)]
    elif isinstance(std, Mapping):
        key = module if module in std else (OUTPUT if module is None else names.get(id(module)))
        if key not in std:
            raise ValueError(f"feature_std has no entry for {OUTPUT if module is None else key!r}")
        std = std[key]
    if std is None:
        return None
    std = torch.as_tensor(std, dtype=torch.float32, device=raw.device)
    if not torch.isfinite(std).all() or (std <= 0).any():
        raise ValueError("feature_std must be finite and positive everywhere (it divides the distortion)")
    try:
        full = std.expand(raw.shape[1:]) if std.dim() <= raw.dim() - 1 else None
    except RuntimeError:
        full = None
    if full is None:
        raise ValueError(
            f"feature_std of shape {tuple(std.shape)} does not broadcast to the feature's shape "
            f"{tuple(raw.shape[1:])} (per sentence, before target selection)"
        )
    std = floor_std(std, 1e-3)
    return _as_2d(_select(std.expand(raw.shape), target).float())


def _token_mask(cfg: Settings, args: tuple[Tensor, ...], values3: Tensor) -> Tensor:
    batch, tokens = values3.shape[:2]
    if cfg.mask is not None:
        mask = torch.as_tensor(cfg.mask, device=values3.device)
        if mask.shape != (batch, tokens):
            raise ValueError(f"mask has shape {tuple(mask.shape)}; expected (batch, tokens) = {(batch, tokens)}")
        mask = mask.bool()
    elif cfg.pad_token_id is not None:
        if args[0].shape[:2] != (batch, tokens):
            raise ValueError("pad_token_id needs inputs[0] to be token ids of shape (batch, tokens); pass mask instead")
        mask = (args[0] != cfg.pad_token_id).to(values3.device)
    else:
        mask = torch.ones((batch, tokens), dtype=torch.bool, device=values3.device)
    empty = (~mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"sentence(s) {empty} are all padding; remove them from the batch")
    return mask


def _max_sigma(cfg: Settings, layer: nn.Module, on_input: bool, values3: Tensor, mask: Tensor) -> Tensor:
    batch = values3.shape[0]
    if cfg.max_sigma is not None:
        cap = torch.as_tensor(cfg.max_sigma, dtype=torch.float32, device=values3.device).expand(batch).clone()
    elif isinstance(layer, nn.Embedding) and not on_input:
        cap = torch.full((batch,), MAX_SIGMA_FACTOR * float(layer.weight.detach().float().std()), device=values3.device)
    else:
        v = values3.float()
        cap = torch.stack([MAX_SIGMA_FACTOR * v[b][mask[b]].std(unbiased=False) for b in range(batch)])
    if not (torch.isfinite(cap).all() and (cap > 0).all()):
        raise ValueError(f"max_sigma must be finite and positive, got {cap.tolist()}")
    return cap


def _sentence_seeds(args: tuple[Tensor, ...], mask: Tensor, seed: int) -> list[int]:
    """One seed per sentence from the run's seed and the sentence's own content (not its position)."""
    seeds = []
    for b in range(mask.shape[0]):
        h = hashlib.blake2b(str(int(seed)).encode(), digest_size=8)
        for a in args:
            row = a[b]
            if row.dim() >= 1 and row.shape[0] == mask.shape[1]:
                row = row[mask[b].to(row.device)]
            h.update(row.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        seeds.append(int.from_bytes(h.digest(), "little") & ((1 << 63) - 1))
    return seeds
