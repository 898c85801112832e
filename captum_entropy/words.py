"""Tokens to words (:func:`group_tokens`, :meth:`WordGrouping.aggregate`), and one segmentation
for the words of several tokenizers on the same sentence (:func:`align_words`).

>>> g = group_tokens(["[CLS]", "un", "##believ", "##able", "film", "[SEP]", "[PAD]"],
...                  mask=[1, 1, 1, 1, 1, 1, 0])
>>> g.words, g.word_of, g.special_names()
(('unbelievable', 'film'), (-1, 0, 0, 0, 1, -1, -1), ['[CLS]', '[SEP]'])
>>> align_words([["don't", "panic"], ["Don", "'", "t", "panic"]])
[[[0], [1]], [[0, 1, 2], [3]]]
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

SCHEMES = ("wordpiece", "sentencepiece", "bytelevel", "word")

DEFAULT_SPECIALS: frozenset[str] = frozenset({
    "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[BOS]", "[EOS]", "<s>", "</s>", "<pad>", "<cls>",
    "<sep>", "<mask>", "<bos>", "<eos>", "<|endoftext|>", "<|pad|>", "<|begin_of_text|>",
    "<|end_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>"})
_UNKNOWN = frozenset({"[unk]", "<unk>", "<|unk|>"})  # a real word: never special


def _is_unknown(token: str) -> bool:
    return token.strip().lower() in _UNKNOWN


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: each byte as a printable character (0x20 ' ' -> 'Ġ', 0x0A '\\n' -> 'Ċ')."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    shifted = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(shifted)}}


_BYTE_TO_CHAR = _bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _is_continuation(token: str) -> bool:
    return token.startswith("##") and len(token) > 2


def _byte_decode(text: str) -> str:
    """Byte-level characters back to text; a character outside the table stands for itself."""
    raw = b"".join(bytes([_CHAR_TO_BYTE[c]]) if c in _CHAR_TO_BYTE else c.encode() for c in text)
    return raw.decode("utf-8", errors="replace")


def detect_scheme(tokens: Sequence[str]) -> str:
    """The subword scheme the tokens' markers reveal (``"word"`` when there are none).

    >>> detect_scheme(["▁the", "▁un", "believ", "able"]), detect_scheme(["Hello", "Ġworld"])
    ('sentencepiece', 'bytelevel')
    """
    if any(_is_continuation(t) for t in tokens):
        return "wordpiece"
    if any(t.startswith("▁") for t in tokens):
        return "sentencepiece"
    if any(t.startswith("Ġ") or "Ċ" in t for t in tokens):
        return "bytelevel"
    return "word"


@dataclass(frozen=True)
class WordGrouping:
    """How one sentence's token positions form words.

    ``tokens``: one string per position, padding included; ``words``: readable word strings in
    sentence order; ``word_of``: per position the index into ``words``, or -1 (special token,
    separator or padding); ``specials``: positions of special tokens and of whitespace-only
    separator tokens (byte-level "Ċ"), never padding; ``scheme``: the scheme used.
    Every real (non-padding) position is in exactly one word or in ``specials``.
    """

    tokens: tuple[str, ...]
    words: tuple[str, ...]
    word_of: tuple[int, ...]
    specials: tuple[int, ...]
    scheme: str

    @property
    def n_words(self) -> int:
        return len(self.words)

    def spans(self) -> list[list[int]]:
        """The token positions of each word, e.g. ``[[1, 2, 3], [4]]``."""
        return [[p for p, v in enumerate(self.word_of) if v == w] for w in range(self.n_words)]

    def special_names(self) -> list[str]:
        """The token strings at :attr:`specials`."""
        return [self.tokens[p] for p in self.specials]

    def padded(self, width: int) -> "WordGrouping":
        """The same grouping over ``width`` positions (the extra ones padding, in no word)."""
        extra = width - len(self.tokens)
        if extra < 0:
            raise ValueError(f"cannot pad {len(self.tokens)} positions to {width}")
        return WordGrouping(self.tokens + ("",) * extra, self.words, self.word_of + (-1,) * extra, self.specials,
                            self.scheme)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (for result files)."""
        return {"tokens": list(self.tokens), "words": list(self.words), "word_of": list(self.word_of),
                "specials": list(self.specials), "scheme": self.scheme}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WordGrouping":
        """Inverse of :meth:`to_dict`, checked: a damaged file gives a ValueError, never a wrong grouping."""
        try:
            g = cls(tuple(map(str, d["tokens"])), tuple(map(str, d["words"])), tuple(int(i) for i in d["word_of"]),
                    tuple(int(i) for i in d["specials"]), str(d["scheme"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a word grouping: {err!r}") from None
        n_t, n_w = len(g.tokens), len(g.words)
        if (len(g.word_of) != n_t or any(not -1 <= w < n_w for w in g.word_of)
                or any(not 0 <= p < n_t for p in g.specials) or g.scheme not in SCHEMES):
            raise ValueError("not a word grouping: indices out of range or unknown scheme")
        return g

    def _as_tensor(self, values: Any) -> torch.Tensor:
        t = torch.as_tensor(values)
        if t.dim() == 0 or t.shape[-1] != len(self.tokens):
            raise ValueError(f"values must be shaped (..., {len(self.tokens)}) (one per token), "
                             f"got shape {tuple(t.shape)}")
        return t

    def aggregate(self, values: Any) -> Any:
        """Per word, the sum over its tokens: values ``(..., T)`` -> ``(..., W)``.

        The sum is the right way to merge entropies and kept information: the noise on different
        tokens is independent, so ``H(X_a, X_b | s) = H(X_a|s) + H(X_b|s)`` under the method's
        independence assumption. Padding and special positions are left out (a NaN there never
        reaches a word). Takes a tensor (or anything ``torch.as_tensor`` takes) and returns a
        tensor on the same device, differentiable; a numpy array gives a numpy array.

        >>> g = group_tokens(["[CLS]", "un", "##real", "[SEP]"])
        >>> g.aggregate(torch.tensor([[float("nan"), 1.0, 2.0, 5.0]]))
        tensor([[3.]])
        """
        t = self._as_tensor(values)
        pos = torch.tensor([p for p, w in enumerate(self.word_of) if w >= 0], dtype=torch.long)
        index = torch.tensor(self.word_of, dtype=torch.long)[pos].to(t.device)
        out = t.new_zeros(*t.shape[:-1], self.n_words).index_add(-1, index, t[..., pos.to(t.device)])
        return out.numpy() if type(values).__module__ == "numpy" else out

    def pieces(self) -> torch.Tensor:
        """(W,) how many tokens (pieces) each word has, e.g. ``tensor([3, 1])``."""
        counts = torch.zeros(self.n_words, dtype=torch.long)
        for w in self.word_of:
            if w >= 0:
                counts[w] += 1
        return counts

    def mean(self, values: Any) -> Any:
        """Per word, the mean over its tokens: values ``(..., T)`` -> ``(..., W)``.

        :meth:`aggregate` divided by :meth:`pieces`: a word cut into k pieces with equal values
        reads like a one-piece word with that value (the fair reading of
        :mod:`captum_entropy.readings`).

        >>> g = group_tokens(["[CLS]", "un", "##real", "film", "[SEP]"])
        >>> g.mean(torch.tensor([9.0, 1.0, 2.0, 4.0, 9.0]))
        tensor([1.5000, 4.0000])
        """
        total = self.aggregate(values)
        if type(values).__module__ == "numpy":
            return total / self.pieces().clamp_min(1).numpy()
        return total / self.pieces().clamp_min(1).to(total.device, total.dtype)

    def special_values(self, values: Any) -> Any:
        """The values at the special positions: ``(..., T)`` -> ``(..., len(specials))``.

        >>> group_tokens(["[CLS]", "ok", "[SEP]"]).special_values(torch.tensor([0.5, 1.0, 2.0]))
        tensor([0.5000, 2.0000])
        """
        t = self._as_tensor(values)
        out = t[..., torch.tensor(self.specials, dtype=torch.long, device=t.device)]
        return out.numpy() if type(values).__module__ == "numpy" else out


def _as_list(name: str, seq: Any, n: int) -> list:
    if isinstance(seq, torch.Tensor):
        if seq.dim() != 1:
            raise ValueError(f"{name} must be 1-D (one sentence), got shape {tuple(seq.shape)}")
        seq = seq.tolist()
    seq = list(seq)
    if len(seq) != n:
        raise ValueError(f"{name} has {len(seq)} entries but tokens has {n}")
    return seq


def _display(tokens: list[str], scheme: str) -> str:
    if scheme == "wordpiece":
        text = "".join(t[2:] if _is_continuation(t) else t for t in tokens)
    elif scheme == "sentencepiece":
        # byte-fallback pieces ("<0xC3>", "<0xA9>") are the UTF-8 bytes of one character
        raw = b"".join(bytes([int(t[3:5], 16)]) if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t)
                       else t.encode() for t in tokens)
        text = raw.decode("utf-8", errors="replace").replace("▁", " ")
    elif scheme == "bytelevel":
        text = _byte_decode("".join(tokens))
    else:
        text = "".join(tokens)
    return text.strip() or "".join(tokens)


def group_tokens(
    tokens: Sequence[str],
    word_ids: Sequence[int | None] | None = None,
    mask: Sequence[bool] | Sequence[int] | torch.Tensor | None = None,
    special_tokens: Iterable[str] | None = None,
    scheme: str = "auto",
    decode: Callable[[list[str]], str] | None = None,
) -> WordGrouping:
    """Group one sentence's tokens into words.

    Without ``word_ids`` the markers decide: wordpiece "##x" continues the word before;
    sentencepiece "▁x" / bytelevel "Ġx" starts a word, a lone "▁"/"Ġ" joins the next token's word,
    a byte-level newline ("Ċ") is a separator (listed in ``specials``); word: each token is a word.
    The first token after a special always starts a word (a "##x" there too: not an error). For
    sentencepiece/bytelevel a word is what whitespace delimits ("world," is one word); pass
    ``word_ids`` (a fast tokenizer's ``encoding.word_ids(b)``) for the pre-tokenizer's words:
    equal consecutive ids form a word, ``None`` is special, the scheme only builds the strings.
    ``mask``: False/0 is padding (never a word or special); without it a "[PAD]" is a special.
    ``special_tokens`` (default :data:`DEFAULT_SPECIALS`; ``tokenizer.all_special_tokens`` works:
    "[UNK]" / "<unk>" always stay words). ``decode`` (e.g. ``tokenizer.convert_tokens_to_string``)
    builds each word's string from its tokens.

    >>> g = group_tokens(["<s>", "Hello", "Ġworld", "Ġcaf", "Ã©", "</s>"])
    >>> g.words, g.scheme, g.spans()
    (('Hello', 'world', 'café'), 'bytelevel', [[1], [2], [3, 4]])
    """
    tokens = tuple(tokens)
    if not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be strings (use tokenizer.convert_ids_to_tokens(ids))")
    n = len(tokens)
    if scheme == "auto":
        scheme = detect_scheme(tokens)
    elif scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; use 'auto' or one of {', '.join(SCHEMES)}")
    real = [True] * n if mask is None else [bool(m) for m in _as_list("mask", mask, n)]
    ids = None if word_ids is None else _as_list("word_ids", word_ids, n)
    specials = {s for s in (DEFAULT_SPECIALS if special_tokens is None else special_tokens)
                if not _is_unknown(s)}

    word_of, special_pos = [-1] * n, []
    n_words, current, last_id = 0, False, None  # current: the next token may join the word before
    pending: list[int] = []  # lone space markers ("▁", "Ġ") waiting for the token they belong to
    marker = {"sentencepiece": "▁", "bytelevel": "Ġ"}.get(scheme)
    for p, tok in enumerate(tokens):
        if not real[p] or (ids[p] is None if ids is not None else tok in specials or (
                scheme == "bytelevel" and not _byte_decode(tok).strip() and tok.strip("Ġ"))):
            special_pos += pending + ([p] if real[p] else [])  # pending with nothing to join
            pending, current, last_id = [], False, None
            continue
        if ids is not None:
            starts = not current or ids[p] != last_id
        elif marker is not None and tok.strip(marker) == "":
            pending.append(p)
            continue
        elif scheme == "wordpiece":
            starts = not (current and _is_continuation(tok))
        else:
            starts = marker is None or not current or tok.startswith(marker)
        n_words += bool(pending or starts)
        for q in [*pending, p]:
            word_of[q] = n_words - 1
        pending, current, last_id = [], True, None if ids is None else ids[p]
    special_pos += pending

    spans = [[tokens[p] for p in range(n) if word_of[p] == w] for w in range(n_words)]
    words = tuple(decode(s).strip() if decode is not None else _display(s, scheme) for s in spans)
    return WordGrouping(tokens, words, tuple(word_of), tuple(sorted(special_pos)), scheme)


_SENTINEL = "\x00"  # one character for an unknown token: it matches no text, so it absorbs it


def _normalise(word: str) -> str:
    if _is_unknown(word):
        return _SENTINEL
    text = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    return "".join(text.lower().split())


def _units(word_lists: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    norm = [[_normalise(w) for w in words] for words in word_lists]
    texts = ["".join(ws) for ws in norm]
    ref = max(range(len(texts)), key=lambda m: len(texts[m]))  # the first among the longest
    r = texts[ref]
    spans: list[list[tuple[int, int]]] = []
    for m, ws in enumerate(norm):
        # lo/hi: the least/greatest offset in r that offset i of this model's text maps to
        lo, hi = [len(r)] * (len(texts[m]) + 1), [0] * (len(texts[m]) + 1)

        def put(i: int, j: int) -> None:
            lo[i], hi[i] = min(lo[i], j), max(hi[i], j)

        ops = ([("equal", 0, len(r), 0, len(r))] if texts[m] == r else
               difflib.SequenceMatcher(None, texts[m], r, autojunk=False).get_opcodes())
        for tag, i1, i2, j1, j2 in ops:
            for i in range(i1, i2 + 1):
                put(i, j1 + i - i1 if tag == "equal" else j1 if i < i2 or i1 == i2 else j2)
            if tag == "insert":  # text of r this model lacks: its words do not claim it
                put(i1, j2)
        ends = list(itertools.accumulate(map(len, ws)))
        spans.append([(hi[a], max(hi[a], lo[b])) for a, b in zip([0, *ends[:-1]], ends)])
    blocked = {x for out in spans for s, e in out for x in range(s + 1, e)}  # would split a word
    cuts = [x for x in range(1, len(r)) if x not in blocked] + [len(r)]
    units: list[list[list[int]]] = [[[] for _ in cuts] for _ in word_lists]
    for m, out in enumerate(spans):
        for k, (s, _) in enumerate(out):  # the unit holding the word's first character
            units[m][min(bisect.bisect_right(cuts, s), len(cuts) - 1)].append(k)
    return units


def align_words(word_lists: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """One segmentation of a sentence for the words of several models (tokenizers).

    Returns, per model, per unit, the indices of that model's words forming the unit: every
    model's words appear once, in order. A unit boundary is where every model has a word
    boundary at the same character of the normalised text (lower-cased, accents and whitespace
    removed): the coarsest segmentation all models refine. When the texts differ (an unknown
    token, a truncated model), each is aligned with ``difflib.SequenceMatcher`` to the longest
    one; an unknown token ("[UNK]", "<unk>") absorbs the text it replaces. Text a model lacks
    (it truncated the sentence) gives units with an empty list for that model.

    >>> align_words([["the", "café", "!"], ["The", "[UNK]", "!"], ["the"]])
    [[[0], [1], [2]], [[0], [1], [2]], [[0], [], []]]
    """
    if not word_lists:
        return []
    if all(_normalise(w) == "" for ws in word_lists for w in ws):  # nothing to align on
        return [[list(range(len(ws)))] if any(word_lists) else [] for ws in word_lists]
    return _units(word_lists)


def aligned_words(word_lists: Sequence[Sequence[str]]) -> list[str]:
    """One readable string per unit of :func:`align_words`.

    The first model's words of the unit (the first model with words there and no unknown
    token), joined with a space between two letters or digits and nothing next to punctuation.

    >>> aligned_words([["[UNK]", "isn", "'", "t", "new", "york"], ["Paris", "isn't", "New York"]])
    ['Paris', "isn't", 'new york']
    """
    units = align_words(word_lists)
    out = []
    for u in range(len(units[0]) if units else 0):
        choices = [[word_lists[m][k] for k in units[m][u]] for m in range(len(word_lists))]
        known = [ws for ws in choices if ws and not any(map(_is_unknown, ws))]
        words = (known or [ws for ws in choices if ws])[0]
        text = words[0]
        for w in words[1:]:
            text += " " + w if text[-1:].isalnum() and w[:1].isalnum() else w
        out.append(text)
    return out
