"""The reversal experiment: every method explains every output step, scored against the truth.

:func:`run_experiment` explains, at each output step of a trained reversal model
(:mod:`captum_entropy.zoo.reversal`), the emitted token's logit with EntropyAttribution (two
settings, :data:`ENTROPY_VARIANTS`) and Captum's Saliency, InputXGradient and
LayerIntegratedGradients, and measures the ground truth (Jacobians, token swaps;
:mod:`captum_entropy.evaluate.ground_truth`). :func:`summarize` and :func:`truth_summary` turn an
:class:`Experiment` into rows with bootstrap intervals over sequences. ``benchmarks/reverse_task.py``
is the command that runs it and writes the tables.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .._io import load_tensors, save_tensors
from ..zoo.reversal import PAD, Batch, ReverseTransformer, Step, make_batch
from .ground_truth import (
    counterfactual_reads, jacobian_norms, jacobian_shares, log_spread, mass_share, nanmean, per_sequence, set_hit,
    source_positions, source_rank, truth_sets, valid_masks,
)
from .statistics import bootstrap_ci


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


ENTROPY_VARIANTS: dict[str, dict[str, Any]] = {
    "entropy": {},
    "entropy_adam": {"update": "adam", "entropy_weight": 0.1},
}
"""EntropyAttribution settings compared: the package defaults (the tolerance objective, newton
update) and the authors' penalised objective solved by Adam (``entropy_weight=0.1``). Both get
``max_steps`` and ``seed`` from :func:`run_experiment`."""

METHODS = (*ENTROPY_VARIANTS, "saliency", "input_x_gradient", "layer_ig")
"""Word-level scores (higher = more important) of each method:

* ``entropy``, ``entropy_adam``: EntropyAttribution's kept information
  ``max_token_entropy − H(X_i|s)`` in nats (``result.importance(normalize=False)``; ranks
  like −H, and is ≥ 0).
* ``saliency``: Captum ``Saliency`` on the embedded source, L2 norm over the embedding width
  (at the clean input this *is* the Jacobian norm the ground truth is built from).
* ``input_x_gradient``: Captum ``InputXGradient``, |sum over the embedding width|.
* ``layer_ig``: Captum ``LayerIntegratedGradients`` on ``model.embedding``, baseline all-PAD
  ids (a zero embedding: ``padding_idx``), |sum over the embedding width|.
"""


def fit_feature_std(model: nn.Module, batch: Batch, layer: int | None = None) -> Tensor:
    """σ_S for the explained features, with :class:`~captum_entropy.FeatureStats`.

    Pooled over every real (sequence, step) pair: the std of each logit (layer ``None``), or
    of each hidden dimension after ``layer`` encoder layers (Transformer), over the rows
    ``feature[mask]``. One σ_S per model and layer, shared by all steps, so scores are
    comparable across timestamps.
    """
    from ..stats import FeatureStats

    if layer is not None and not isinstance(model, ReverseTransformer):
        raise ValueError("layer= needs a ReverseTransformer (the LSTM has no encoder layers to explain)")
    emitted = model.predict(batch.src, batch.lengths)

    def rows(src: Tensor, lengths: Tensor, emitted: Tensor) -> Tensor:
        b = Batch(src, src, lengths)
        feat = model.all_logits(b, emitted) if layer is None else model.hidden(src, b.mask, layer)
        return feat[b.mask]

    return FeatureStats().fit(rows, [(batch.src, batch.lengths, emitted)])["output"]


@dataclass
class Experiment:
    """Everything :func:`run_experiment` measured on N sequences (arrays are numpy).

    Attributes:
        kind: ``"lstm"`` or ``"transformer"``.
        lengths: (N,) sequence lengths.
        correct: (N, T) the emitted token equals the reversal (NaN on missing steps).
        scores: method -> (N, T, P) word scores for the emitted token's logit at each step.
        jacobian: (N, T, P) Jacobian norms of that logit (the ground truth's raw material).
        truth: (N, T, P) bool, the positions each step reads (:func:`truth_sets`).
        counterfactual: (N, T, P) share of token swaps at ``i`` that flip the output at ``t``.
        n_dims: K, the width of ``model.embedding`` (kept nats / K = −log σ + const).
        layer_scores: (method, l) -> (N, T, P) scores for the Transformer's hidden vector at
            ``t`` after ``l`` layers; ``layer_jacobian`` / ``layer_truth``: l -> its truth.
        converged: (method, feature) -> share of EntropyAttribution runs that converged.
        seconds: method (or ``method@layerL``) -> wall time.
        settings: what was run.
    """

    kind: str
    lengths: np.ndarray
    correct: np.ndarray
    scores: dict[str, np.ndarray]
    jacobian: np.ndarray
    truth: np.ndarray
    counterfactual: np.ndarray | None = None
    n_dims: int = 1
    layer_scores: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    layer_jacobian: dict[int, np.ndarray] = field(default_factory=dict)
    layer_truth: dict[int, np.ndarray] = field(default_factory=dict)
    converged: dict[tuple[str, str], float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def _explain_step(
    model: nn.Module, step: Step, sub: Batch, method: str, std: Tensor, entropy_kwargs: dict[str, Any], ig_steps: int,
) -> tuple[Tensor, float | None]:
    """(B, P) word scores of one method for one step (NaN on padding), and the converged share."""
    from captum.attr import InputXGradient, LayerIntegratedGradients, Saliency

    from ..attr import EntropyAttribution

    if method in ENTROPY_VARIANTS:
        ea = EntropyAttribution(step.forward, model.embedding)
        res = ea.attribute_result(sub.src, target=step.target, additional_forward_args=step.extra, mask=sub.mask,
                         feature_std=std, **entropy_kwargs, **ENTROPY_VARIANTS[method])
        kept = res.importance(normalize=False).clamp_min(0.0)  # float error at the cap gives -1e-5
        return kept, float(res.converged.float().mean())
    if step.target is None:
        raise ValueError(f"{method} needs a scalar feature (a target); hidden-vector features are for entropy only")
    emb = model.embedding(sub.src).detach().requires_grad_(True)
    if method == "saliency":
        attr = Saliency(step.forward_embedded).attribute(emb, target=step.target, additional_forward_args=step.extra)
        word = attr.norm(dim=-1)
    elif method == "input_x_gradient":
        attr = InputXGradient(step.forward_embedded).attribute(emb, target=step.target, additional_forward_args=step.extra)
        word = attr.sum(-1).abs()
    elif method == "layer_ig":
        lig = LayerIntegratedGradients(step.forward, model.embedding)
        attr = lig.attribute(sub.src, baselines=torch.full_like(sub.src, PAD), target=step.target,
                             additional_forward_args=step.extra, n_steps=ig_steps)
        word = attr.sum(-1).abs()
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    return word.detach().masked_fill(~sub.mask, float("nan")), None


def _fingerprint(model: nn.Module, batch: Batch, stats: Batch, **settings: Any) -> str:
    """What a kept step's scores depend on: the model's weights, the batch and the σ_S batch, the
    settings, the package's defaults and versions (a new default estimator must not mix with
    steps the old one made)."""
    from .. import __version__
    from ..optim_settings import SMALL_FEATURE_SAMPLES
    from ..settings import Settings

    h = hashlib.sha256(repr((Settings(), sorted(ENTROPY_VARIANTS.items()), SMALL_FEATURE_SAMPLES, __version__,
                             torch.__version__)).encode())
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().double().contiguous().numpy().tobytes())
    for x in (batch.src, batch.lengths, stats.src, stats.lengths):
        h.update(x.cpu().contiguous().numpy().tobytes())
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()[:16]


def _load_step(path: Path, fingerprint: str) -> tuple[Tensor, float | None, float]:
    """A kept step's ``(word scores, converged share, seconds)``, checked against this run."""
    tensors, meta = load_tensors(path, "a reversal step's scores")
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path} does not belong to the run whose folder it is in (its fingerprint differs: copied or "
            f"edited by hand?); remove it and run again: the step is computed anew")
    return tensors["word"], meta.get("converged"), float(meta.get("seconds", 0.0))


def run_experiment(
    model: nn.Module,
    batch: Batch,
    methods: Sequence[str] = METHODS,
    layers: Sequence[int] = (),
    layer_methods: Sequence[str] = ("entropy_adam",),
    stats_batch: Batch | None = None,
    truth_rel: float = 0.5,
    max_steps: int = 100,
    ig_steps: int = 32,
    n_swaps: int = 3,
    seed: int = 0,
    progress: bool = True,
    work: str | os.PathLike | None = None,
) -> Experiment:
    """Explain, at every output step ``t``, the logit of the emitted token with each method.

    What is explained: for the Transformer, the logit at position ``t`` of the token the model
    emits there; for the LSTM, the logit at decoder step ``t`` of the token it emits, with the
    decoder fed ``BOS`` and its own greedy outputs before ``t`` (held fixed: only the
    encoder's source is perturbed). All methods act on the output of ``model.embedding`` (the
    source's token embeddings) and explain the same scalar (Captum ``target`` = the emitted
    ids). EntropyAttribution gets ``feature_std`` from :func:`fit_feature_std` on
    ``stats_batch`` (default: 256 fresh sequences) and ``max_steps``; see
    :data:`ENTROPY_VARIANTS`.

    ``layers`` (Transformer only): for each l, the entropy variants in ``layer_methods`` also
    explain the hidden vector at ``t`` after l encoder layers (its whole D-vector, σ_S per
    dimension), scored against that vector's own Jacobian truth. The gradient methods need a
    scalar, so they run on the logits only.

    ``work``: a folder that keeps each (output step, method)'s scores in its own file as soon as
    they are computed, under a subfolder named by a fingerprint of the model's weights, the batch,
    the settings and the package's defaults and version: a run killed part way and started again
    the same way computes only what is missing, and a run that differs in any of them starts its
    own subfolder instead of mixing with another's.
    """
    from tqdm.auto import tqdm

    unknown = [m for m in (*methods, *layer_methods) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {METHODS}")
    not_entropy = [m for m in layer_methods if m not in ENTROPY_VARIANTS]
    if layers and not_entropy:
        raise ValueError(f"layer_methods must be entropy variants {tuple(ENTROPY_VARIANTS)}, got {not_entropy}")
    if layers and not isinstance(model, ReverseTransformer):
        raise ValueError("layers= needs a ReverseTransformer (the LSTM has no encoder layers to explain)")
    n_layers = len(model.layers) if isinstance(model, ReverseTransformer) else 0
    bad = [l for l in layers if not (isinstance(l, int) and 1 <= l <= n_layers)]
    if bad:
        raise ValueError(f"layers must be ints in [1, {n_layers}], got {bad}")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    model.eval()
    stats_batch = stats_batch if stats_batch is not None else make_batch(256, model.task, seed=seed + 777)
    stds: dict[int | None, Tensor] = {None: fit_feature_std(model, stats_batch)}
    for l in layers:
        stds[l] = fit_feature_std(model, stats_batch, layer=l)
    entropy_kwargs = dict(max_steps=max_steps, seed=seed)

    emitted = model.predict(batch.src, batch.lengths)
    n, length = batch.src.shape
    lengths = _np(batch.lengths)
    nan3 = lambda: torch.full((n, length, length), float("nan"))  # noqa: E731
    jac: dict[int | None, Tensor] = {f: nan3() for f in [None, *layers]}
    plan = [(m, None) for m in methods] + [(m, l) for l in layers for m in layer_methods]
    out = {key: nan3() for key in plan}
    conv: dict[tuple[str, str], float] = {}
    seconds = {(m if l is None else f"{m}@layer{l}"): 0.0 for m, l in plan}
    fingerprint = "" if work is None else _fingerprint(model, batch, stats_batch, max_steps=max_steps,
                                                         ig_steps=ig_steps, seed=seed, truth_rel=truth_rel)
    kept = None if work is None else Path(work) / fingerprint  # another run's steps live in another folder
    bar = tqdm(total=length * len(plan), desc=f"explain {model.cfg.kind}", disable=not progress, leave=False)
    try:
        for t in range(length):
            rows = (batch.lengths > t).nonzero().flatten()
            if len(rows) == 0:
                bar.update(len(plan))
                continue
            sub = batch.select(rows)
            emb = model.embedding(sub.src).detach()
            steps = {f: model.step(sub, t, emitted[rows]) if f is None else model.step(sub, t, emitted[rows], layer=f)
                     for f in jac}
            for f, step in steps.items():
                norms = jacobian_norms(step.forward_embedded, emb, step.extra, step.target, scale=stds[f])
                jac[f][rows, t] = norms.masked_fill(~sub.mask, float("nan"))
            for m, f in plan:
                name = m if f is None else f"{m}@layer{f}"
                done = None if kept is None else kept / f"t{t:02d}-{name}.safetensors"
                if done is not None and done.is_file():
                    word, c, spent = _load_step(done, fingerprint)
                else:
                    start = time.perf_counter()
                    word, c = _explain_step(model, steps[f], sub, m, stds[f], entropy_kwargs, ig_steps)
                    spent = time.perf_counter() - start
                    if done is not None:
                        meta = {"fingerprint": fingerprint, "converged": c, "seconds": spent}
                        save_tensors(done, {"word": word.float()}, meta)
                seconds[name] += spent
                out[(m, f)][rows, t] = word.float()
                if c is not None:
                    key = (m, "logit" if f is None else f"layer {f}")
                    conv[key] = conv.get(key, 0.0) + c * len(rows)
                bar.update(1)
    finally:
        bar.close()
    start = time.perf_counter()
    cf = counterfactual_reads(model, batch, n_swaps=n_swaps, seed=seed) if n_swaps else None
    seconds["counterfactual"] = time.perf_counter() - start
    valid_steps, _ = valid_masks(lengths, length, length)
    n_runs = float(valid_steps.sum())
    jac_np = {f: _np(j) for f, j in jac.items()}
    return Experiment(
        kind=model.cfg.kind, lengths=lengths,
        correct=np.where(valid_steps, _np(emitted == batch.tgt).astype(float), np.nan),
        scores={m: _np(out[(m, None)]) for m in methods},
        jacobian=jac_np[None], truth=truth_sets(jac_np[None], lengths, truth_rel), counterfactual=cf,
        n_dims=int(model.embedding.embedding_dim),
        layer_scores={(m, l): _np(out[(m, l)]) for m, l in plan if l is not None},
        layer_jacobian={l: jac_np[l] for l in layers},
        layer_truth={l: truth_sets(jac_np[l], lengths, truth_rel) for l in layers},
        converged={k: v / n_runs for k, v in conv.items()},
        seconds=seconds,
        settings={"methods": list(methods), "layers": list(layers), "layer_methods": list(layer_methods),
                  "truth_rel": truth_rel, "max_steps": max_steps, "ig_steps": ig_steps, "n_swaps": n_swaps,
                  "seed": seed, "n_sequences": int(n)},
    )


# ---------------------------------------------------------------------------------------------
# summaries


def _log_scale(scores: np.ndarray, method: str, n_dims: int) -> np.ndarray:
    """Scores on a log scale: kept nats / K (= −log σ + const) for entropy, log(score) else."""
    if method in ENTROPY_VARIANTS:
        return scores / n_dims
    with np.errstate(divide="ignore"):
        return np.log(scores)


def summarize(exp: Experiment, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (method, feature) with bootstrap 95 % intervals over sequences.

    Columns, each ``(mean, low, high)``: ``diag`` (share of steps whose true source ranks
    first), ``rank`` (mean rank of the source, 0 = top), ``set_hit`` (top-k = the Jacobian
    set), ``mass`` (share of score mass on the set), ``spread`` (coherence, :func:`log_spread`:
    std across steps of the source's log-scale score, lower = more coherent) and
    ``source_score`` (mean score of the source, in the method's own units), ``source_zero``
    (share of steps where the source scores exactly 0; for EntropyAttribution: σ at the cap,
    the source counted as fully forgotten); ``converged``:
    share of EntropyAttribution runs that converged (``None`` for the other methods).
    """
    items = [(m, "logit", s, exp.truth) for m, s in exp.scores.items()]
    items += [(m, f"layer {l}", s, exp.layer_truth[l]) for (m, l), s in exp.layer_scores.items()]
    rows = []
    for method, feature, s, truth in items:
        rank = source_rank(s, exp.lengths)
        src = source_positions(exp.lengths, s.shape[1])
        at_src = np.take_along_axis(s, np.maximum(src, 0)[:, :, None], axis=2)[..., 0]
        ci = lambda v: bootstrap_ci(per_sequence(v), seed=seed)  # noqa: E731
        rows.append({
            "model": exp.kind, "method": method, "feature": feature,
            "diag": ci(np.where(np.isnan(rank), np.nan, rank == 0)),
            "rank": ci(rank),
            "set_hit": ci(set_hit(s, truth, exp.lengths)),
            "mass": ci(mass_share(s, truth, exp.lengths)),
            "spread": bootstrap_ci(log_spread(_log_scale(s, method, exp.n_dims), exp.lengths), seed=seed),
            "source_score": ci(np.where(src >= 0, at_src, np.nan)),
            "source_zero": ci(np.where(src >= 0, at_src == 0, np.nan)),
            "converged": exp.converged.get((method, feature)),
        })
    return rows


def truth_summary(exp: Experiment, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """What the model provably reads, each as ``(mean, low, high)`` over sequences.

    Jacobian (emitted logit): ``source_top`` (the source has the largest norm),
    ``source_share`` / ``self_share`` (share of the norm on the source, and on token ``t``
    itself for steps with ``t ≠ n−1−t``), ``set_size`` (truth-set size),
    ``set_is_source_and_self`` (the set is exactly {n−1−t, t}, steps with ``t ≠ n−1−t``).
    Token swaps (:func:`counterfactual_reads`), how often swapping an input flips the emitted
    token: ``swap_source``, ``swap_self`` (token t), ``swap_emitted`` (sources of earlier
    steps, i > n−1−t) and ``swap_pending`` (sources of later steps, i < n−1−t), the last two
    without token t.
    """
    n, length, _ = exp.jacobian.shape
    lengths = exp.lengths
    src = source_positions(lengths, length)
    valid_steps, valid_pos = valid_masks(lengths, length, length)
    t = np.broadcast_to(np.arange(length)[None, :], (n, length))
    off = valid_steps & (src != t)
    shares = jacobian_shares(exp.jacobian, lengths)
    take = lambda a, idx: np.take_along_axis(a, np.maximum(idx, 0)[:, :, None], axis=2)[..., 0]  # noqa: E731
    rank = source_rank(np.nan_to_num(exp.jacobian, nan=0.0), lengths)
    both = np.zeros_like(exp.truth)
    np.put_along_axis(both, np.maximum(src, 0)[:, :, None], True, axis=2)
    np.put_along_axis(both, t[:, :, None], True, axis=2)
    out = {
        "source_top": np.where(np.isnan(rank), np.nan, rank == 0),
        "source_share": take(shares, src),
        "self_share": np.where(off, take(shares, t), np.nan),
        "set_size": exp.truth.sum(-1).astype(float),
        "set_is_source_and_self": np.where(off, (exp.truth == both).all(-1), np.nan),
    }
    if exp.counterfactual is not None:
        cf = exp.counterfactual
        pos = np.arange(length)[None, None, :]
        not_self = pos != t[:, :, None]
        group = lambda sel: nanmean(np.where(sel & valid_pos[:, None, :], cf, np.nan), axis=-1)  # noqa: E731
        out |= {
            "swap_source": take(cf, src),
            "swap_self": np.where(off, take(cf, t), np.nan),
            "swap_emitted": group((pos > src[:, :, None]) & not_self),
            "swap_pending": group((pos < src[:, :, None]) & not_self),
        }
    return {k: bootstrap_ci(per_sequence(np.where(valid_steps, v, np.nan)), seed=seed) for k, v in out.items()}
