"""EntropyAttribution: Guan et al. (2019)'s information measure as a Captum layer attribution.

Thin adapter: formats Captum-style inputs, runs the model with hooks (:mod:`.feature`) and
hands the per-sentence problems to the optimiser (:mod:`.optim`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import fields
from typing import Any, Callable, Literal, Sequence, overload

import torch
from captum._utils.common import _format_additional_forward_args
from captum.attr._utils.attribution import LayerAttribution, PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ._deprecated import renamed
from .errors import ConvergenceWarning, NotComparableWarning
from .feature import Feature
from .hooks import no_dropout
from .model_runner import ModelRunner, format_inputs
from .optim import SigmaFit, fit_sigma
from .padding import token_mask
from .result import EntropyResult
from .seeds import sentence_seeds
from .settings import DEFAULT_TOLERANCE, Settings, Unset, given
from .sigma_cap import max_sigma as sigma_cap
from .stats import module_names

__all__ = ["ConvergenceWarning", "EntropyAttribution", "NotComparableWarning", "Settings", "DEFAULT_TOLERANCE"]


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
        >>> attr.shape, attr.sum(-1).shape    # like the layer output; .sum(-1): nats each word keeps
        (torch.Size([1, 3, 8]), torch.Size([1, 3]))
        >>> bool((attr >= 0).all())           # high = important, 0 = forgotten
        True
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
            raise TypeError(
                f"layer must be an nn.Module, got {type(layer).__name__}: pass the module object where the noise "
                "goes, e.g. model.bert.embeddings or an nn.Embedding"
            )
        targets = list(target_layer) if isinstance(target_layer, (list, tuple, nn.ModuleList)) else [target_layer]
        for t in targets:
            if t is not None and not isinstance(t, nn.Module):
                raise TypeError(
                    f"target_layer must be an nn.Module or a list of them, got {type(t).__name__}: pass the module "
                    "objects, e.g. model.bert.encoder.layer[2], or None for the model output"
                )
        if isinstance(target_layer, (list, tuple, nn.ModuleList)) and not targets:
            raise ValueError("target_layer is an empty list")
        PerturbationAttribution.__init__(self, forward_func)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        self.target_layer = target_layer
        self._targets = targets

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        """``return_convergence_delta=True`` gives, per example, how far σ is from its optimum."""
        return True

    @overload
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        return_convergence_delta: Literal[False] = False,
        quantity: Literal["kept", "entropy"] = "kept",
        *,
        preset: str | None = None,
        tolerance: float | None = Unset.tolerance,
        feature_std: Any = Unset.feature_std,
        mask: Tensor | None = Unset.mask,
        pad_token_id: int | None = Unset.pad_token_id,
        max_sigma: float | Tensor | None = Unset.max_sigma,
        method: Literal["optimize", "linearized"] = Unset.method,
        max_steps: int = Unset.max_steps,
        n_samples: int | None = Unset.n_samples,
        seed: int = Unset.seed,
        internal_batch_size: int | None = Unset.internal_batch_size,
        show_progress: bool = Unset.show_progress,
        **settings: Any,
    ) -> Tensor | list[Tensor]: ...

    @overload
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        *,
        return_convergence_delta: Literal[True],
        quantity: Literal["kept", "entropy"] = "kept",
        preset: str | None = None,
        tolerance: float | None = Unset.tolerance,
        feature_std: Any = Unset.feature_std,
        mask: Tensor | None = Unset.mask,
        pad_token_id: int | None = Unset.pad_token_id,
        max_sigma: float | Tensor | None = Unset.max_sigma,
        method: Literal["optimize", "linearized"] = Unset.method,
        max_steps: int = Unset.max_steps,
        n_samples: int | None = Unset.n_samples,
        seed: int = Unset.seed,
        internal_batch_size: int | None = Unset.internal_batch_size,
        show_progress: bool = Unset.show_progress,
        **settings: Any,
    ) -> tuple[Tensor | list[Tensor], Tensor | list[Tensor]]: ...

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        return_convergence_delta: bool = False,
        quantity: Literal["kept", "entropy"] = "kept",
        *,
        preset: str | None = None,
        tolerance: float | None = Unset.tolerance,
        feature_std: Any = Unset.feature_std,
        mask: Tensor | None = Unset.mask,
        pad_token_id: int | None = Unset.pad_token_id,
        max_sigma: float | Tensor | None = Unset.max_sigma,
        method: Literal["optimize", "linearized"] = Unset.method,
        max_steps: int = Unset.max_steps,
        n_samples: int | None = Unset.n_samples,
        seed: int = Unset.seed,
        internal_batch_size: int | None = Unset.internal_batch_size,
        show_progress: bool = Unset.show_progress,
        **settings: Any,
    ) -> Tensor | list[Tensor] | tuple[Any, Any]:
        r"""Information the feature keeps about each element of the layer, shaped like the layer.

        Element ``(b, t, d)`` is ``log(max_sigma/σ)`` in nats: the entropy of that element at the
        σ cap (fully forgotten) minus its entropy ``½·log(2πe·σ²)``. So it is ≥ 0, high =
        important (Captum's orientation), 0 = forgotten, 0 on padding, and ``.sum(-1)`` is the
        information each word keeps. ``quantity="entropy"`` returns the entropies themselves
        (the paper's ``H(X_t|s)`` after ``.sum(-1)``; low = kept, NaN on padding). With a list
        ``target_layer``, a list of such tensors, one per layer. The tensor is contiguous, on the
        layer's device and of its dtype.

        Args:
            inputs: tensor or tuple of tensors, first dimension the batch.
            target: Captum target semantics, applied to the feature (model output, or
                ``target_layer``'s output): int, tuple, tensor or list.
            additional_forward_args: passed to ``forward_func`` after ``inputs``. An attention
                mask among them (or among ``inputs[1:]``) is detected and used for padding when
                the model provably ignores the positions it masks (see ``mask``).
            attribute_to_layer_input: put the noise on the layer's input instead of its
                output (works for modules called with keyword arguments).
            return_convergence_delta: also return, per example, ``stationarity``: the RMS step
                in log σ the optimiser would still take (NaN for ``method="linearized"``).
            quantity: ``"kept"`` (default) or ``"entropy"``.
            preset: ``None`` (the fast default) or ``"guan2019"`` (the authors' settings); the
                keywords you pass win over the preset's.
            tolerance: τ, how much the normalised feature may change (default 0.05);
                ``tolerance=None`` with ``entropy_weight=λ`` is the authors' penalised objective.
            feature_std: σ_S, the feature's std over data (tensor, :class:`FeatureStats`, dict
                or list; default ``None``: self-normalised, with a warning).
            mask, pad_token_id: padding (default: an attention mask found among the inputs).
            max_sigma: the σ cap (default: 10 × the embedding weights' std for an
                ``nn.Embedding`` layer, else 10 × the std of the sentence's layer values).
            method: ``"optimize"`` (default) or ``"linearized"`` (the closed form, no steps).
            max_steps, n_samples: the optimiser's budget (default 100 steps; draws per step 64
                for a small fixed-size feature such as a logit, else 16).
            seed: base seed of every sentence's noise stream (default 0).
            internal_batch_size: most sentences optimised at once (memory; answers unchanged).
            show_progress: a tqdm progress bar (default False).
            **settings: any other field of :class:`Settings` or
                :class:`~captum_entropy.optim.OptimSettings` (``entropy_weight``, ``update``,
                ``tol``, ``amp``, ...), each documented there.

        Returns:
            the attributions (a tensor, or a list for a list ``target_layer``), and with
            ``return_convergence_delta`` a pair ``(attributions, delta)``.
        """
        results = self.attribute_result(  # unset keywords pass through as Unset: attribute_result filters them once
            inputs, target, additional_forward_args, attribute_to_layer_input, preset=preset, tolerance=tolerance,
            feature_std=feature_std, mask=mask, pad_token_id=pad_token_id, max_sigma=max_sigma, method=method,
            max_steps=max_steps, n_samples=n_samples, seed=seed, internal_batch_size=internal_batch_size,
            show_progress=show_progress, **settings)
        many = isinstance(results, list)
        results = results if many else [results]
        attrs = [r.attribution(quantity) for r in results]
        out = attrs if many else attrs[0]
        if not return_convergence_delta:
            return out
        deltas = [r.stationarity.to(a.device) for r, a in zip(results, attrs)]
        return out, (deltas if many else deltas[0])

    @log_usage()
    def attribute_result(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        *,
        preset: str | None = None,
        tolerance: float | None = Unset.tolerance,
        feature_std: Any = Unset.feature_std,
        mask: Tensor | None = Unset.mask,
        pad_token_id: int | None = Unset.pad_token_id,
        max_sigma: float | Tensor | None = Unset.max_sigma,
        method: Literal["optimize", "linearized"] = Unset.method,
        max_steps: int = Unset.max_steps,
        n_samples: int | None = Unset.n_samples,
        seed: int = Unset.seed,
        internal_batch_size: int | None = Unset.internal_batch_size,
        show_progress: bool = Unset.show_progress,
        **settings: Any,
    ) -> EntropyResult | list[EntropyResult]:
        """Like :meth:`attribute` (the same keywords) but returns :class:`EntropyResult` (σ, kept
        information and entropies per word, convergence, loss curves, saturation, padding), one
        per target layer.

        Works inside ``torch.no_grad()`` (gradients are switched on where the optimiser needs
        them); the model's weights, ``.grad``, ``requires_grad`` and training flags are left as
        they were (dropout is off during the call)."""
        cfg = Settings.from_kwargs(preset, **given(
            tolerance=tolerance, feature_std=feature_std, mask=mask, pad_token_id=pad_token_id, max_sigma=max_sigma,
            method=method, max_steps=max_steps, n_samples=n_samples, seed=seed,
            internal_batch_size=internal_batch_size, show_progress=show_progress), **settings)
        args = format_inputs(inputs)
        extra = _format_additional_forward_args(additional_forward_args) or ()
        batch = args[0].shape[0]
        if batch == 0:
            raise ValueError("inputs are empty: the batch has 0 sentences; pass at least one")
        run = ModelRunner(self.forward_func, self.layer, attribute_to_layer_input, args, extra, batch, cfg.amp)
        with no_dropout():
            values, clean_features = run.clean(self._targets)
            values3 = values.reshape(batch, values.shape[1], -1) if values.dim() >= 3 else values[..., None]
            mask, mask_source = token_mask(
                cfg, args, extra, values3, lambda m: run.ignores(m, values, self._targets, clean_features)
            )
            cap = sigma_cap(cfg, self.layer, attribute_to_layer_input, values3, mask)
            seeds = sentence_seeds(args, mask, cfg.seed)
            results = []
            for idx, module in enumerate(self._targets):
                problem = Feature.build(module, clean_features[idx], target, cfg, idx, mask, self._root_names(),
                                        n_targets=len(self._targets))
                layer_cfg = cfg.for_feature(problem.per_token, math.prod(problem.shape))
                fit = self._optimise(run, problem, values3, mask, cap, seeds, layer_cfg)
                result = EntropyResult(
                    sigma=fit.sigma, mask=mask, max_sigma=cap, saturated=fit.saturated.all(-1) & mask,
                    steps=fit.steps, converged=fit.converged, losses=fit.losses, init_sigma=fit.init_sigma,
                    stop_reason=fit.stop_reason, stationarity=fit.stationarity, distortion=fit.distortion,
                    linear_sigma=fit.linear_sigma, linear_log_se=fit.linear_log_se,
                    log_sigma_se=fit.log_sigma_se, ambiguous=fit.ambiguous, ambiguity_gap=fit.ambiguity_gap,
                    alternative_sigma=fit.alternative_sigma, trades=fit.trades & mask, n_draws=fit.n_draws,
                    n_dims=values3.shape[-1], layer_shape=tuple(values.shape), feature=problem.name,
                    settings={**layer_cfg.describe(preset), "mask": mask_source},
                    layer_dtype=str(values.dtype).removeprefix("torch."),
                )
                _warn_if_untrustworthy(result, layer_cfg)
                results.append(result)
        return results if isinstance(self.target_layer, (list, tuple, nn.ModuleList)) else results[0]

    # -- internals -------------------------------------------------------------------------


    def explain(self, *args: Any, **kwargs: Any) -> EntropyResult | list[EntropyResult]:
        """Deprecated spelling of :meth:`attribute_result` (``captum_entropy.explain`` is the
        one-line function that returns a :class:`~captum_entropy.LayerExplanation`)."""
        renamed("EntropyAttribution.explain()", "EntropyAttribution.attribute_result()")
        return self.attribute_result(*args, **kwargs)

    def _root_names(self) -> dict[int, str]:
        return module_names(self.forward_func)

    def _optimise(
        self, run: "ModelRunner", problem: "Feature", values3: Tensor, mask: Tensor, cap: Tensor,
        seeds: list[int], cfg: Settings,
    ) -> SigmaFit:
        batch, dev = values3.shape[0], values3.device
        chunk = cfg.internal_batch_size or batch
        bar = None
        if cfg.show_progress:
            from tqdm.auto import tqdm

            per_chunk = None if cfg.optim.update == "fixed_draws" else cfg.optim.max_steps
            bar = tqdm(total=batch if per_chunk is None else math.ceil(batch / chunk) * per_chunk,
                       desc=f"entropy[{problem.name}]", unit="sentence" if per_chunk is None else "step")
        fits = []
        try:
            for start in range(0, batch, chunk):
                ids = torch.arange(start, min(start + chunk, batch), device=dev)
                gens = [torch.Generator(device=dev).manual_seed(seeds[i]) for i in ids.tolist()]
                done = [0]

                def tick(n: int) -> None:
                    bar.update(n - done[0])
                    done[0] = n

                base = bar.n if bar is not None else 0
                fits.append(
                    fit_sigma(
                        values3[ids], mask[ids], lambda x, rows, ids=ids: problem.feature(run, x, ids[rows]),
                        problem.clean[ids], problem.fmask.flatten(1)[ids] > 0, cap[ids], gens, cfg.optim,
                        tolerance=None if cfg.tolerance is None else torch.full((len(ids),), float(cfg.tolerance), device=dev),
                        entropy_weight=None if cfg.entropy_weight is None else torch.full((len(ids),), float(cfg.entropy_weight), device=dev),
                        progress=tick if bar is not None else None,
                    )
                )
                if bar is not None and per_chunk is not None:
                    bar.update(base + per_chunk - bar.n)  # a chunk that stopped early is done, not at "5 %"
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
    if failed and cfg.optim.update == "fixed_draws":
        warnings.warn(
            f"{result.feature}: sentence(s) {failed[:10]}{' ...' if len(failed) > 10 else ''} did not pass the KKT test "
            f"on their fixed draws within max_iter={cfg.optim.max_iter} iterations (result.stationarity: "
            f"{[round(float(result.stationarity[i]), 3) for i in failed[:5]]}, tol={cfg.optim.tol}); raise max_iter, "
            "or check result.converged before using these rows",
            ConvergenceWarning,
            stacklevel=4,
        )
    elif failed and cfg.optim.early_stop:
        se = result.log_sigma_se[failed][result.mask[failed] & ~result.saturated[failed]]
        se = se[torch.isfinite(se)]
        precision = (f"; their σ have a median standard error of {float(se.median()):.3f} in log σ "
                     "(result.log_sigma_se; result.ordered() says which words it orders)") if se.numel() else ""
        target = cfg.optim.precision
        warnings.warn(
            f"{result.feature}: sentence(s) {failed[:10]}{' ...' if len(failed) > 10 else ''} did not pass the "
            f"stationarity test{'' if target is None else f' nor reach precision={target}'} in "
            f"max_steps={cfg.optim.max_steps} (result.stationarity: "
            f"{[round(float(result.stationarity[i]), 3) for i in failed[:5]]}, tol={cfg.optim.tol}){precision}; "
            "raise max_steps or n_samples"
            + (", or set precision (e.g. 0.05) to stop once σ is that precise (docs/method.md)" if target is None else "")
            + ", or check result.converged before using these rows",
            ConvergenceWarning,
            stacklevel=4,
        )
    mask = result.mask
    all_capped = ((result.saturated | ~mask).all(1)).nonzero().flatten().tolist()
    if all_capped:
        what = f"tolerance={cfg.tolerance}" if cfg.tolerance is not None else f"entropy_weight={cfg.entropy_weight}"
        warnings.warn(
            f"{result.feature}: every word of sentence(s) {all_capped[:10]} is at the σ cap (fully forgotten): "
            f"the feature stays within {what} even with all words destroyed, or max_sigma is too small; "
            "lower the tolerance (or entropy_weight), or raise max_sigma",
            ConvergenceWarning,
            stacklevel=4,
        )
