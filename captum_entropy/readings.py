"""Word readings: one number per word from its pieces' numbers, fair across piece counts.

A tokenizer cuts words into pieces ("porridge" -> "por", "##ridge") and the method gives every
piece its own σ. Summed over a word's pieces and their dimensions, the kept information
Σ log(σ_max/σ) grows with the number of pieces before the model has done anything: a two-piece
word reads about twice as kept as a one-piece word, so pictures ranked by the sum show the
tokenizer. The default readings here are therefore **per dimension**: the mean over the word's
pieces and their dimensions, in nats/dim (or bits/dim). A word cut into k pieces with the same σ
as a one-piece word reads the same, and models of different widths share one scale. The sums
over pieces stay available as ``*_total`` (how much of the word is kept in all).

>>> import torch
>>> from captum_entropy.words import group_tokens
>>> g = group_tokens(["[CLS]", "cold", "por", "##ridge", "[SEP]"])
>>> kept = torch.tensor([[1.0, 768.0, 768.0, 768.0, 1.0]])      # 384 dims, 2 nats/dim each piece
>>> per_dim(g, kept, 384), g.aggregate(kept)                      # the reading, and the total
(tensor([[2., 2.]]), tensor([[ 768., 1536.]]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._deprecated import renamed
from ._names import Z95
from .entropy import nats_to_bits
from .words import WordGrouping

UNITS = ("nats", "bits")


def to_unit(values: Tensor, unit: str) -> Tensor:
    """``values`` (nats) in ``unit``: ``"nats"`` or ``"bits"``."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    return values if unit == "nats" else nats_to_bits(values)


def per_dim(grouping: WordGrouping, token_values: Tensor, n_dims: int) -> Tensor:
    """Per word, the mean over its pieces of ``token_values / n_dims`` (token values summed over
    their ``n_dims`` dimensions): ``(..., T)`` -> ``(..., W)``."""
    return grouping.mean(token_values) / n_dims


def share(rows: Tensor) -> Tensor:
    """Each entry over its row's sum (rows of non-negative readings sum to 1; a zero row stays 0)."""
    total = rows.sum(-1, keepdim=True)
    return rows / torch.where(total > 0, total, torch.ones_like(total))


def relative(rows: Tensor) -> Tensor:
    """Each entry over its row's mean: 1 = the sentence's average word (a zero row stays 0)."""
    mean = rows.mean(-1, keepdim=True) if rows.shape[-1] else rows.sum(-1, keepdim=True)
    return rows / torch.where(mean > 0, mean, torch.ones_like(mean))


def kept_meaning(n_dims: int, unit: str = "nats") -> str:
    """The one line that says what the kept-information number of a word means."""
    return (f"kept information per dimension, {unit}/dim: the mean over the word's pieces and their {n_dims} "
            "dimensions of log(σ_max/σ); high = kept, 0 = forgotten; a word cut into pieces reads like "
            "one piece with the same σ")


class WordReadings:
    """Word, special-token and sentence readings of an explanation (mixed into
    :class:`~captum_entropy.analysis.LayerExplanation`): needs ``groupings``, ``token_kept``,
    ``token_entropy`` (L, B, T), ``saturated`` and ``n_dims``."""

    groupings: list[WordGrouping]
    token_kept: Tensor
    token_entropy: Tensor
    saturated: Tensor
    log_sigma_se: Tensor
    n_dims: int

    def __len__(self) -> int:
        return len(self.groupings)

    def word_kept(self, b: int, unit: str = "nats") -> Tensor:
        """(L, W): kept information per dimension (nats/dim): the mean over the word's pieces and
        their dimensions of log(σ_max/σ). High = kept, 0 = forgotten; fair across piece counts."""
        return to_unit(per_dim(self.groupings[b], self.token_kept[:, b], self.n_dims), unit)

    def word_kept_se(self, b: int, unit: str = "nats") -> Tensor:
        """(L, W): standard error of :meth:`word_kept` from the noise draws: the mean of its pieces'
        standard errors of log σ (as if their errors moved together: never narrower than the
        truth when they do not); 0 for a word at the cap, NaN where not measured."""
        return to_unit(self.groupings[b].mean(self.log_sigma_se[:, b]), unit)

    def word_kept_half_width(self, b: int, unit: str = "nats") -> Tensor:
        """(L, W): half the width of the 95 % interval of :meth:`word_kept` (:data:`Z95` standard errors)."""
        return Z95 * self.word_kept_se(b, unit)

    def word_kept_interval(self, b: int, unit: str = "nats") -> tuple[Tensor, Tensor]:
        """(low, high), each (L, W): the 95 % interval of :meth:`word_kept`."""
        kept, half = self.word_kept(b, unit), self.word_kept_half_width(b, unit)
        return kept - half, kept + half

    def word_ordered(self, b: int) -> Tensor:
        """(L, W, W) bool: word i is kept more than word j and their 95 % intervals do not overlap
        (no pair is ordered where the errors are unknown)."""
        low, high = self.word_kept_interval(b)
        return low[:, :, None] > high[:, None, :]

    def word_undetermined(self, b: int) -> Tensor:
        """(L, W) bool: the word's place in the order is not determined: its 95 % interval
        overlaps that of the word ranked next above or below it (True where errors are unknown)."""
        kept = self.word_kept(b)
        low, high = self.word_kept_interval(b)
        order = kept.argsort(-1, descending=True)
        lo, hi = low.gather(-1, order), high.gather(-1, order)
        touches = lo[:, :-1] <= hi[:, 1:]  # the word at rank r and the next one down overlap
        touches = touches | ~torch.isfinite(lo[:, :-1]) | ~torch.isfinite(hi[:, 1:])
        near = torch.zeros_like(kept, dtype=torch.bool)
        near[:, :-1] |= touches
        near[:, 1:] |= touches
        if kept.shape[-1] == 1:
            near |= ~torch.isfinite(low)
        out = torch.zeros_like(near)
        return out.scatter(-1, order, near)

    def word_kept_total(self, b: int, unit: str = "nats") -> Tensor:
        """(L, W): kept information summed over the word's pieces and dimensions (nats): how much
        of the word is kept in all; grows with the number of pieces."""
        return to_unit(self.groupings[b].aggregate(self.token_kept[:, b]), unit)

    def word_entropy(self, b: int, unit: str = "nats") -> Tensor:
        """(L, W): entropy per dimension (nats/dim), the mean over the word's pieces and dimensions
        of ½·log(2πe·σ²) (low = kept)."""
        return to_unit(per_dim(self.groupings[b], self.token_entropy[:, b], self.n_dims), unit)

    def word_entropy_total(self, b: int, unit: str = "nats") -> Tensor:
        """(L, W): the paper's H(X_word|s), summed over the word's pieces and dimensions (nats)."""
        return to_unit(self.groupings[b].aggregate(self.token_entropy[:, b]), unit)

    def word_share(self, b: int) -> Tensor:
        """(L, W): each word's :meth:`word_kept` over the sum over the sentence's words (rows sum to 1;
        1/W each if every word is kept alike)."""
        return share(self.word_kept(b))

    def word_relative(self, b: int) -> Tensor:
        """(L, W): each word's :meth:`word_kept` over the sentence's mean word (1 = average)."""
        return relative(self.word_kept(b))

    def word_contrast(self, b: int, unit: str = "nats") -> Tensor:
        """(L, W): :meth:`word_kept` minus the sentence's mean word's (nats/dim; 0 = average). It
        equals the words' mean log σ minus the word's, so the σ cap cancels: a log ratio of
        tolerated noise that compares models of any width and embedding scale."""
        kept = self.word_kept(b, unit)
        return kept - kept.mean(-1, keepdim=True)

    def word_pieces(self, b: int) -> Tensor:
        """(W,): how many tokens each word of sentence ``b`` has."""
        return self.groupings[b].pieces()

    def word_saturated(self, b: int) -> Tensor:
        """(L, W) bool: every token of the word is at the σ cap (fully forgotten)."""
        g = self.groupings[b]
        return g.aggregate(self.saturated[:, b].to(torch.float32)) >= g.pieces().to(torch.float32) - 0.5

    def special_kept(self, b: int, unit: str = "nats") -> Tensor:
        """(L, S): kept information per dimension of each special token ([CLS], [SEP], ...)."""
        return to_unit(self.groupings[b].special_values(self.token_kept[:, b]) / self.n_dims, unit)

    def special_kept_total(self, b: int, unit: str = "nats") -> Tensor:
        """(L, S): kept information of each special token, summed over its dimensions (nats)."""
        return to_unit(self.groupings[b].special_values(self.token_kept[:, b]), unit)

    def special_entropy(self, b: int, unit: str = "nats") -> Tensor:
        """(L, S): entropy per dimension of each special token."""
        return to_unit(self.groupings[b].special_values(self.token_entropy[:, b]) / self.n_dims, unit)

    def special_entropy_total(self, b: int, unit: str = "nats") -> Tensor:
        """(L, S): the entropy of each special token, summed over its dimensions (nats)."""
        return to_unit(self.groupings[b].special_values(self.token_entropy[:, b]), unit)

    def total_word_entropy(self, unit: str = "nats") -> Tensor:
        """(L, B): Σ over the sentence's words (specials left out) of :meth:`word_entropy_total`."""
        return torch.stack([self.word_entropy_total(b, unit).sum(-1) for b in range(len(self))], 1)

    def total_word_kept(self, unit: str = "nats") -> Tensor:
        """(L, B): Σ over the sentence's words (specials left out) of :meth:`word_kept_total`."""
        return torch.stack([self.word_kept_total(b, unit).sum(-1) for b in range(len(self))], 1)

    def sentence_entropy(self, unit: str = "nats") -> Tensor:
        """Deprecated spelling of :meth:`total_word_entropy`."""
        renamed(f"{type(self).__name__}.sentence_entropy()", f"{type(self).__name__}.total_word_entropy()")
        return self.total_word_entropy(unit)

    def sentence_kept(self, unit: str = "nats") -> Tensor:
        """Deprecated spelling of :meth:`total_word_kept`."""
        renamed(f"{type(self).__name__}.sentence_kept()", f"{type(self).__name__}.total_word_kept()")
        return self.total_word_kept(unit)

    def mean_word_entropy(self, unit: str = "nats", per_dim: bool = True) -> Tensor:
        """(L, B): the mean over the sentence's words of :meth:`word_entropy` (per dimension, so
        sentences of any length and tokenization and models of any width share one scale);
        ``per_dim=False``: of :meth:`word_entropy_total`."""
        get = self.word_entropy if per_dim else self.word_entropy_total
        return torch.stack([get(b, unit).mean(-1) for b in range(len(self))], 1)

    def mean_word_kept(self, unit: str = "nats") -> Tensor:
        """(L, B): the mean over the sentence's words of :meth:`word_kept` (nats/dim)."""
        return torch.stack([self.word_kept(b, unit).mean(-1) for b in range(len(self))], 1)

    def corpus_entropy(self, unit: str = "nats", per_dim: bool = True) -> Tensor:
        """(L,): :meth:`mean_word_entropy` averaged over the sentences (the paper's corpus level)."""
        return self.mean_word_entropy(unit, per_dim).mean(-1)
