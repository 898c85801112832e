"""Ground truth and scores for attributions on the reversal task (:mod:`captum_entropy.zoo.reversal`).

What each output provably reads, measured instead of assumed: :func:`jacobian_norms` (and
:func:`jacobian_shares`, :func:`truth_sets`) and :func:`counterfactual_reads` (token swaps).
How an attribution matrix scores against it: :func:`source_rank`, :func:`set_hit`,
:func:`mass_share`, :func:`log_spread`, averaged by :func:`per_sequence` (the unit that
:func:`~captum_entropy.evaluate.statistics.bootstrap_ci` resamples).

Score arrays are ``(N sequences, T output steps, P input positions)``, higher = more important,
NaN where the step or the position does not exist; step ``t`` of a length-``n`` sequence has the
true source ``n−1−t``.

>>> s = np.array([[[0.2, 0.9, 0.1], [0.3, 0.8, 0.1], [0.7, 0.1, 0.1]]])   # n = 3: sources 2, 1, 0
>>> source_rank(s, np.array([3]))
array([[2., 0., 0.]])
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..zoo.reversal import FIRST_SYMBOL, Batch


def jacobian_norms(
    forward_embedded: Callable[..., Tensor], embedded: Tensor, extra: Sequence[Any] = (), target: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    """(B, P): ``‖∂f/∂x_i‖``, the Jacobian norm of the feature w.r.t. each position's embedding.

    ``f = forward_embedded(embedded, *extra)`` is (B, C); with ``target`` (B,) only the
    element ``f[b, target[b]]`` (the emitted token's logit; ``scale`` is then ignored: one
    element's scale does not change the shares), else all C elements, each divided by
    ``scale`` (C,) if given (Frobenius norm over the C elements and the embedding width).
    Exact: one backward pass per feature element. Rows must not interact (no batch norm).

    >>> w = torch.tensor([1.0, 2.0])
    >>> f = lambda x: (x[:, 0] @ w + 3 * x[:, 2] @ w)[:, None]          # reads positions 0 and 2
    >>> jacobian_norms(f, torch.zeros(1, 3, 2), target=torch.tensor([0])) / 5 ** 0.5
    tensor([[1., 0., 3.]])
    """
    emb = embedded.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = forward_embedded(emb, *extra)
        if out.dim() != 2 or out.shape[0] != emb.shape[0]:
            raise ValueError(f"forward_embedded must return (batch, features), got shape {tuple(out.shape)}")
        if target is not None:
            out = out.gather(1, torch.as_tensor(target, device=out.device).reshape(-1, 1))
        elif scale is not None:
            out = out / torch.as_tensor(scale, dtype=out.dtype, device=out.device)
        sq = torch.zeros(emb.shape[:2], dtype=emb.dtype, device=emb.device)
        for c in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[:, c].sum(), emb, retain_graph=c + 1 < out.shape[1])
            sq += g.pow(2).flatten(2).sum(-1)
    return sq.sqrt().detach()


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def valid_masks(lengths: np.ndarray, n_steps: int, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) bool of the steps and (N, P) bool of the positions that exist."""
    lengths = np.asarray(lengths)
    return np.arange(n_steps)[None, :] < lengths[:, None], np.arange(n_pos)[None, :] < lengths[:, None]


def jacobian_shares(norms: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T, P) each position's share of the step's Jacobian norm (rows sum to 1), NaN elsewhere."""
    norms = np.asarray(norms, dtype=float)
    steps, pos = valid_masks(lengths, norms.shape[1], norms.shape[2])
    ok = steps[:, :, None] & pos[:, None, :]
    x = np.where(ok, norms, 0.0)
    tot = x.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok & (tot > 0), x / tot, np.nan)


def truth_sets(norms: np.ndarray, lengths: np.ndarray, rel: float = 0.5) -> np.ndarray:
    """(N, T, P) bool: the positions a step reads, from Jacobian norms (N, T, P).

    A position belongs to the set when its norm is at least ``rel`` × the step's largest norm
    (so the set is never empty). ``rel=1`` keeps only the top position.

    >>> truth_sets(np.array([[[1.0, 0.1, 0.6]]]), np.array([3]), rel=0.5).astype(int)
    array([[[1, 0, 1]]])
    """
    if not 0 < rel <= 1:
        raise ValueError(f"rel must be in (0, 1], got {rel!r}")
    norms = np.asarray(norms, dtype=float)
    if norms.ndim != 3:
        raise ValueError(f"norms must be (sequences, steps, positions), got shape {norms.shape}")
    steps, pos = valid_masks(lengths, norms.shape[1], norms.shape[2])
    ok = steps[:, :, None] & pos[:, None, :]
    x = np.where(ok, norms, -np.inf)
    top = x.max(-1, keepdims=True)
    return ok & (x >= rel * top) & (top > 0)


@torch.no_grad()
def counterfactual_reads(model: nn.Module, batch: Batch, n_swaps: int = 3, seed: int = 0) -> np.ndarray:
    """(N, T, P): share of ``n_swaps`` random replacements of input ``i`` that change the token
    emitted at step ``t`` (LSTM: with the decoder prefix held at the original output).

    A gradient-free check of what the model reads: the source ``n−1−t`` must flip the output
    every time; a position the output only leans on (a query) need not.
    """
    if not (isinstance(n_swaps, int) and n_swaps >= 1):
        raise ValueError(f"n_swaps must be a positive int, got {n_swaps!r}")
    g = torch.Generator().manual_seed(seed)
    emitted = model.predict(batch.src, batch.lengths)
    n, length = batch.src.shape
    changed = torch.zeros(n, length, length)
    for i in range(length):
        rows = (batch.lengths > i).nonzero().flatten()
        if len(rows) == 0:
            continue
        sub = batch.select(rows)
        for _ in range(n_swaps):
            src = sub.src.clone()
            shift = torch.randint(1, model.task.n_symbols, (len(rows),), generator=g)
            src[:, i] = (src[:, i] - FIRST_SYMBOL + shift) % model.task.n_symbols + FIRST_SYMBOL  # always another symbol
            swapped = Batch(src, sub.tgt, sub.lengths)
            out = model.all_logits(swapped, emitted[rows]).argmax(-1)
            changed[rows, :, i] += (out != emitted[rows]).float() / n_swaps
    steps, pos = valid_masks(_np(batch.lengths), length, length)
    return np.where(steps[:, :, None] & pos[:, None, :], changed.numpy(), np.nan)


# -- scores of an attribution matrix (N sequences × T steps × P positions, higher = important) --


def nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmean`` that returns NaN for all-NaN slices without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def source_positions(lengths: np.ndarray, n_steps: int) -> np.ndarray:
    """(N, T): the true source ``n−1−t`` of each step, −1 where the step does not exist."""
    lengths = np.asarray(lengths)
    t = np.arange(n_steps)[None, :]
    return np.where(t < lengths[:, None], lengths[:, None] - 1 - t, -1)


def _check_scores(scores: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    lengths = np.asarray(lengths)
    if scores.ndim != 3 or scores.shape[1] != scores.shape[2]:
        raise ValueError(
            f"scores must be (sequences, steps, positions) with as many steps as positions, got shape {scores.shape}"
        )
    if lengths.shape != (scores.shape[0],):
        raise ValueError(f"lengths must have shape ({scores.shape[0]},), got {lengths.shape}")
    if lengths.min() < 1 or lengths.max() > scores.shape[2]:
        raise ValueError(f"lengths must lie in [1, {scores.shape[2]}], got {lengths.min()}..{lengths.max()}")
    steps, pos = valid_masks(lengths, scores.shape[1], scores.shape[2])
    ok = steps[:, :, None] & pos[:, None, :]
    if np.isnan(scores[ok]).any():
        raise ValueError("scores contain NaN at real steps/positions")
    return scores, steps, ok


def source_rank(scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T): rank of the true source ``n−1−t`` among the real positions (0 = top), NaN for
    missing steps. Ties count against the source, so constant scores get no credit.

    >>> s = np.array([[[0.1, 0.9], [0.5, 0.5]]])           # n = 2: sources are 1, then 0
    >>> source_rank(s, np.array([2]))
    array([[0., 1.]])
    """
    scores, steps, ok = _check_scores(scores, lengths)
    src = source_positions(lengths, scores.shape[1])
    at_src = np.take_along_axis(scores, np.maximum(src, 0)[:, :, None], axis=2)
    others = ok.copy()
    np.put_along_axis(others, np.maximum(src, 0)[:, :, None], False, axis=2)
    rank = (others & (scores >= at_src)).sum(-1).astype(float)
    return np.where(steps, rank, np.nan)


def set_hit(scores: np.ndarray, truth: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T): 1 where the top-k positions (k = size of the true set) are exactly the set, i.e.
    every position in the set scores strictly above every position outside it; NaN for
    missing steps.

    >>> s = np.array([[[3.0, 1.0], [2.0, 2.0]]]); truth = np.array([[[True, False], [True, False]]])
    >>> set_hit(s, truth, np.array([2]))            # step 1 is a tie: no credit
    array([[1., 0.]])
    """
    scores, steps, ok = _check_scores(scores, lengths)
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != scores.shape:
        raise ValueError(f"truth has shape {truth.shape}, scores {scores.shape}")
    inside = truth & ok
    outside = ~truth & ok
    lo = np.where(inside, scores, np.inf).min(-1)
    hi = np.where(outside, scores, -np.inf).max(-1)
    hit = (lo > hi) & inside.any(-1)
    return np.where(steps, hit.astype(float), np.nan)


def mass_share(scores: np.ndarray, truth: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T): share of the step's (non-negative) score mass on the true set; NaN for missing
    steps or an all-zero row.

    >>> s = np.array([[[3.0, 1.0], [1.0, 1.0]]]); truth = np.array([[[True, False], [True, False]]])
    >>> mass_share(s, truth, np.array([2]))
    array([[0.75, 0.5 ]])
    """
    scores, steps, ok = _check_scores(scores, lengths)
    if (scores[ok] < 0).any():
        raise ValueError("mass_share needs non-negative scores (use |attribution| or kept information)")
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != scores.shape:
        raise ValueError(f"truth has shape {truth.shape}, scores {scores.shape}")
    x = np.where(ok, scores, 0.0)
    tot = x.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(truth, x, 0.0).sum(-1) / tot
    return np.where(steps & (tot > 0), share, np.nan)


def log_spread(log_scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N,): per sequence, the std across steps of the true source's score on a log scale.

    Every step copies its source whole, so a coherent measure gives the source the same score
    at every step (spread near 0); a spread of 1 is a factor-e drift. Pass ``log(score)`` for
    gradient methods and ``−log σ`` (kept nats / K) for EntropyAttribution: for a linear
    feature ``σ_i ∝ 1/‖J_i‖``, so both read on the same scale (a CV of kept nats would depend on
    the arbitrary σ cap). NaN for sequences with fewer than 2 steps.

    >>> s = np.log(np.array([[[1.0, 2.0], [2.0, 1.0]], [[1.0, 1.0], [np.e, 1.0]]]))
    >>> log_spread(s, np.array([2, 2]))
    array([0. , 0.5])
    """
    log_scores, steps, _ = _check_scores(log_scores, lengths)
    src = source_positions(lengths, log_scores.shape[1])
    at_src = np.take_along_axis(log_scores, np.maximum(src, 0)[:, :, None], axis=2)[..., 0]
    x = np.where(steps, at_src, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanstd(x, axis=1)
    return np.where(steps.sum(1) >= 2, spread, np.nan)


def per_sequence(values: np.ndarray) -> np.ndarray:
    """(N, T) -> (N,): mean over each sequence's real steps (the unit the bootstrap resamples)."""
    values = np.asarray(values, dtype=float)
    return nanmean(values, axis=1) if values.ndim == 2 else values

