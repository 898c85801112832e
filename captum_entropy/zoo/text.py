"""A word-level tokenizer for the zoo's LSTM, CNN and Transformer (the corpus is pre-tokenised)."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import torch
from torch import Tensor

PAD, UNK = "<pad>", "<unk>"


class WordTokenizer:
    """Lower-cased whitespace tokens -> ids; id 0 is padding, id 1 unknown.

    >>> tok = WordTokenizer.from_texts(["a good film", "a bad film"])
    >>> ids, mask = tok(["a good movie"])
    >>> tok.tokens(ids[0])
    ['a', 'good', '<unk>']
    """

    def __init__(self, vocab: Sequence[str], max_length: int = 64) -> None:
        if list(vocab[:2]) != [PAD, UNK]:
            raise ValueError(f"vocab must start with {PAD!r}, {UNK!r}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_freq: int = 1, max_length: int = 64) -> "WordTokenizer":
        counts = Counter(w for t in texts for w in t.lower().split())
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *words], max_length=max_length)

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask, (B, T) each, padded to the longest text."""
        rows = [[self.index.get(w, 1) for w in t.lower().split()][: self.max_length] or [1] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, (ids != 0).long()

    def tokens(self, ids: Tensor) -> list[str]:
        """The words of one row of ids, padding dropped."""
        return [self.vocab[i] for i in ids.tolist() if i != 0]
