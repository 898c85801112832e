"""Captum's LLM workflow with entropy attribution, on a tiny GPT-2 built from a config (no hub)."""

import matplotlib
import pytest
import torch

from captum_entropy import EntropyAttribution
from captum_entropy.llm import EntropyLLMAttribution

matplotlib.use("Agg")

WORDS = ["<unk>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "."]


@pytest.fixture(scope="module")
def gpt2():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=16, n_embd=16, n_layer=2, n_head=2, initializer_range=0.5)).eval()
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return model, PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")


def test_llm_attribution_with_entropy_gives_captums_result(gpt2):
    from captum.attr import LLMAttributionResult, TextTokenInput

    model, tok = gpt2
    llm_attr = EntropyLLMAttribution(EntropyAttribution(model, model.transformer.wte), tok)
    result = llm_attr.attribute(TextTokenInput("the cat sat on", tok), target="the mat", max_steps=5, n_samples=8)
    assert isinstance(result, LLMAttributionResult)
    assert result.token_attr.shape == (2, 4) and result.seq_attr.shape == (4,)
    assert torch.isfinite(result.token_attr).all() and (result.token_attr >= 0).all()
    assert torch.allclose(result.seq_attr, result.token_attr.sum(0))
    assert result.input_tokens == ["the", "cat", "sat", "on"]
    fig, _ = result.plot_token_attr()
    assert fig is not None
    fig, _ = result.plot_seq_attr()
    assert fig is not None


def test_the_log_probability_is_kept_within_the_tolerance_in_nats(gpt2):
    # feature_std defaults to 1 nat: without it a scalar feature would be divided by its own size
    from captum.attr import TextTokenInput

    model, tok = gpt2
    ea = EntropyAttribution(model, model.transformer.wte)
    llm_attr = EntropyLLMAttribution(ea, tok)
    kept = llm_attr.attribute(TextTokenInput("a dog ran", tok), target=".", max_steps=5, n_samples=8).seq_attr
    looser = llm_attr.attribute(TextTokenInput("a dog ran", tok), target=".", max_steps=5, n_samples=8, tolerance=5.0).seq_attr
    assert (kept >= looser - 1e-6).all() and kept.sum() > looser.sum()  # a looser tolerance keeps less
