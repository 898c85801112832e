"""The reversal benchmark: task and models (captum_entropy.zoo.reversal), ground truth and metrics
(captum_entropy.evaluate.ground_truth), the experiment (captum_entropy.evaluate.reversal_experiment)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from captum_entropy.evaluate import ground_truth as gt
from captum_entropy.evaluate import reversal_experiment as rx
from captum_entropy.evaluate.statistics import bootstrap_ci
from captum_entropy.zoo import reversal as rv

ROOT = Path(__file__).resolve().parents[1]

SMALL = rv.TaskConfig(n_symbols=6, min_len=3, max_len=5)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is faster, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained_transformer():
    """A Transformer trained for a few seconds on short sequences."""
    model = rv.build_model(SMALL, rv.ModelConfig("transformer", dim=32, hidden=64, heads=2))
    report = rv.train_reversal(model, rv.ReversalTrainConfig(steps=300, eval_size=300), progress=False)
    return model, report


# -- data -------------------------------------------------------------------------------------


def test_batch_is_seeded_and_reversed():
    task = rv.TaskConfig(n_symbols=20, min_len=2, max_len=9)
    a, b = rv.make_batch(300, task, seed=3), rv.make_batch(300, task, seed=3)
    assert torch.equal(a.src, b.src) and torch.equal(a.lengths, b.lengths)
    assert not torch.equal(a.src, rv.make_batch(300, task, seed=4).src)
    assert a.src.shape == (300, 9) and a.lengths.min() >= 2 and a.lengths.max() <= 9
    assert set(a.lengths.tolist()) == set(range(2, 10))  # every length occurs in 300 draws
    for src, tgt, n in zip(a.src, a.tgt, a.lengths.tolist()):
        assert torch.equal(tgt[:n], src[:n].flip(0))
        assert (src[n:] == rv.PAD).all() and (tgt[n:] == rv.PAD).all()
        assert ((src[:n] >= rv.FIRST_SYMBOL) & (src[:n] < task.vocab_size)).all()
    assert torch.equal(a.mask, a.src != rv.PAD)
    assert torch.equal(rv.reverse_padded(a.tgt, a.lengths), a.src)  # reversing twice is the identity


def test_generator_gives_a_stream_of_fresh_batches():
    g = torch.Generator().manual_seed(0)
    first, second = rv.make_batch(50, SMALL, generator=g), rv.make_batch(50, SMALL, generator=g)
    assert not torch.equal(first.src, second.src)
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(rv.make_batch(50, SMALL, generator=g2).src, first.src)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: rv.TaskConfig(n_symbols=1), "n_symbols"),
        (lambda: rv.TaskConfig(min_len=6, max_len=5), "min_len"),
        (lambda: rv.TaskConfig(min_len=0), "min_len"),
        (lambda: rv.make_batch(0, SMALL, seed=0), "n must be"),
        (lambda: rv.make_batch(2, SMALL), "exactly one of seed or generator"),
        (lambda: rv.make_batch(2, SMALL, seed=0, generator=torch.Generator()), "exactly one"),
        (lambda: rv.ModelConfig("gru"), "kind"),
        (lambda: rv.ModelConfig("transformer", dim=30, heads=4), "divisible"),
        (lambda: rv.ReversalTrainConfig(steps=0), "steps"),
        (lambda: rv.ReverseLSTM(SMALL, rv.ModelConfig("transformer")), "kind 'lstm'"),
    ],
)
def test_bad_arguments_raise_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# -- models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_padding_never_changes_real_outputs(kind):
    model = rv.build_model(SMALL, rv.ModelConfig(kind, dim=16, hidden=32, heads=2))
    b = rv.make_batch(16, SMALL, seed=0)
    noisy = b.src.clone()
    noisy[~b.mask] = rv.FIRST_SYMBOL + 3  # garbage where the padding was
    dirty = rv.Batch(noisy, b.tgt, b.lengths)
    with torch.no_grad():
        out, out_dirty = model.all_logits(b, b.tgt), model.all_logits(dirty, b.tgt)
    assert torch.allclose(out[b.mask], out_dirty[b.mask], atol=1e-5)
    assert torch.equal(model.predict(b.src, b.lengths), model.predict(noisy, b.lengths))
    assert (model.predict(b.src, b.lengths)[~b.mask] == rv.PAD).all()


def test_checkpoint_round_trip_is_safetensors(tmp_path):
    model = rv.build_model(SMALL, rv.ModelConfig("lstm", dim=8, hidden=16))
    report = rv.TrainReport(accuracy=0.5, losses=[1.0, 0.5], seconds=1.0)
    path = rv.save_reversal(tmp_path / "m.safetensors", model, rv.ReversalTrainConfig(steps=7), report)
    with safe_open(str(path), framework="pt") as f:  # a safetensors file, not a pickle
        assert "embedding.weight" in f.keys()
    loaded, meta = rv.load_reversal(path)
    assert meta["accuracy"] == 0.5 and meta["train"]["steps"] == 7 and meta["task"]["max_len"] == 5
    assert meta["name"] == "reversal"  # the zoo's checkpoint format: a named safetensors file
    b = rv.make_batch(4, SMALL, seed=1)
    assert torch.equal(model.predict(b.src, b.lengths), loaded.predict(b.src, b.lengths))
    from captum_entropy._io import save_tensors

    save_tensors(tmp_path / "other.safetensors", {"w": torch.ones(2)}, {"kind": "something else"})
    with pytest.raises(ValueError, match="not a reverse-task checkpoint"):
        rv.load_reversal(tmp_path / "other.safetensors")


def test_training_is_seeded_and_leaves_the_model_in_eval_mode():
    """The zoo's loop (zoo.training.optimize): same seed, same weights; eval mode, no gradients kept."""
    cfg = rv.ReversalTrainConfig(steps=20, batch_size=16, eval_size=20)
    models = [rv.build_model(SMALL, rv.ModelConfig("lstm", dim=8, hidden=16)) for _ in range(2)]
    reports = [rv.train_reversal(m, cfg, progress=False) for m in models]
    assert reports[0].losses == reports[1].losses and len(reports[0].losses) == 20
    for (k, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(a, b), k
    assert not models[0].training and all(p.grad is None for p in models[0].parameters())
    with pytest.raises(TypeError, match="ReverseLSTM or ReverseTransformer"):
        rv.train_reversal(torch.nn.Linear(2, 2), cfg)


# -- metrics on hand-made score matrices -----------------------------------------------------


def anti_diagonal(lengths: np.ndarray, size: int) -> np.ndarray:
    """Scores 1 on the source n−1−t, 0.1 elsewhere, NaN off the sequence."""
    lengths = np.asarray(lengths)
    s = np.full((len(lengths), size, size), np.nan)
    for b, n in enumerate(lengths):
        s[b, :n, :n] = 0.1
        s[b, np.arange(n), n - 1 - np.arange(n)] = 1.0
    return s


def test_source_rank_and_set_hit_on_known_answers():
    lengths = np.array([4, 2, 3])
    perfect = anti_diagonal(lengths, 4)
    rank = gt.source_rank(perfect, lengths)
    assert np.array_equal(np.isnan(rank), np.arange(4)[None, :] >= lengths[:, None])
    assert np.nanmax(rank) == 0
    # the main diagonal instead: the source ranks last unless it is on both diagonals
    diag = np.where(np.isnan(perfect), np.nan, 0.1)
    for b, n in enumerate(lengths):
        diag[b, np.arange(n), np.arange(n)] = 1.0
    r = gt.source_rank(diag, lengths)
    assert r[0].tolist() == [3, 3, 3, 3] and r[2].tolist()[:3] == [2, 0, 2]
    # constant scores get no credit: every other position ties with the source
    flat = np.where(np.isnan(perfect), np.nan, 1.0)
    assert np.array_equal(gt.source_rank(flat, lengths)[:, 0], lengths - 1)
    truth = ~np.isnan(perfect) & (perfect == 1.0)
    assert np.nansum(gt.set_hit(perfect, truth, lengths)) == lengths.sum()
    assert np.nansum(gt.set_hit(flat, truth, lengths)) == 0
    two = truth.copy()
    two[0, 0, 1] = True  # step 0 of sequence 0 reads {3, 1}: the perfect scores miss position 1
    hit = gt.set_hit(perfect, two, lengths)
    assert hit[0, 0] == 0 and hit[0, 1] == 1


def test_mass_share_and_log_spread():
    lengths = np.array([3])
    s = anti_diagonal(lengths, 3)
    truth = s == 1.0
    assert np.allclose(gt.mass_share(s, truth, lengths)[0], 1.0 / 1.2)
    with pytest.raises(ValueError, match="non-negative"):
        gt.mass_share(-s, truth, lengths)
    assert np.allclose(gt.log_spread(np.log(s), lengths), 0.0)  # the source scores 1 at every step
    drift = s.copy()
    drift[0, np.arange(3), 2 - np.arange(3)] = [1.0, np.e, np.e**2]
    assert np.allclose(gt.log_spread(np.log(drift), lengths), np.std([0.0, 1.0, 2.0]))
    assert np.isnan(gt.log_spread(np.log(anti_diagonal(np.array([1]), 3)), np.array([1])))[0]


def test_metrics_reject_malformed_scores():
    lengths = np.array([3])
    s = anti_diagonal(lengths, 3)
    bad = s.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gt.source_rank(bad, lengths)
    with pytest.raises(ValueError, match="lengths"):
        gt.source_rank(s, np.array([4]))
    with pytest.raises(ValueError, match="as many steps as positions"):
        gt.source_rank(s[:, :2], lengths)
    with pytest.raises(ValueError, match="truth has shape"):
        gt.set_hit(s, np.ones((1, 2, 2), bool), lengths)
    with pytest.raises(ValueError, match="rel"):
        gt.truth_sets(s, lengths, rel=0.0)


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 50), rng.normal(1.0, 1.0, 2000)
    m, lo, hi = bootstrap_ci(small)
    assert m == pytest.approx(small.mean()) and lo < m < hi
    _, lo2, hi2 = bootstrap_ci(large)
    assert hi2 - lo2 < (hi - lo) / 3  # ~ 1/sqrt(n): 40x the data, ~6x narrower
    assert lo2 < 1.0 < hi2
    assert bootstrap_ci(np.array([np.nan, 2.0, 2.0])) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="no finite values"):
        bootstrap_ci(np.array([np.nan]))


# -- ground truth by Jacobians ----------------------------------------------------------------


def test_jacobian_norms_of_a_hand_built_reader():
    w = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])  # row norms 3 and 5

    def f(x):  # (B, 3, 3) -> (B, 2): class 0 reads position 0, class 1 reads 2 positions
        return torch.stack([x[:, 0] @ w[0], 2 * x[:, 1] @ w[1] + x[:, 2] @ w[1]], dim=1)

    x = torch.randn(2, 3, 3)
    assert torch.allclose(gt.jacobian_norms(f, x, target=torch.tensor([0, 1])),
                          torch.tensor([[3.0, 0.0, 0.0], [0.0, 10.0, 5.0]]))
    full = gt.jacobian_norms(f, x, scale=torch.tensor([3.0, 5.0]))  # Frobenius over both classes
    assert torch.allclose(full, torch.tensor([[1.0, 2.0, 1.0]]).expand(2, 3))


def test_truth_of_an_exact_reversal_oracle_is_the_anti_diagonal():
    """Output t = readout of embedding n−1−t (plus a small leak of token t): the truth sets
    must be the source alone at rel=0.5, and {source, t} at rel=0.05."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(SMALL.vocab_size, 4)
    head = torch.nn.Linear(4, SMALL.vocab_size)
    b = rv.make_batch(12, SMALL, seed=5)
    src_idx = rv.reverse_padded(torch.arange(5).expand(12, 5), b.lengths)

    def step_fn(t):
        def f(x):
            rows = torch.arange(x.shape[0])
            return head(x[rows, src_idx[:, t]] + 0.1 * x[:, t])
        return f

    n, length = 12, SMALL.max_len
    norms = np.full((n, length, length), np.nan)
    for t in range(length):
        ok = b.lengths > t
        x = emb(b.src).detach()
        target = torch.randint(0, SMALL.vocab_size, (n,))
        j = gt.jacobian_norms(step_fn(t), x, target=target)
        norms[ok.numpy(), t] = j[ok].masked_fill(~b.mask[ok], np.nan).numpy()
    lengths = b.lengths.numpy()
    truth = gt.truth_sets(norms, lengths, rel=0.5)
    expected = ~np.isnan(anti_diagonal(lengths, length)) & (anti_diagonal(lengths, length) == 1.0)
    assert np.array_equal(truth, expected)
    assert np.nanmax(gt.source_rank(np.nan_to_num(norms), lengths)) == 0
    loose = gt.truth_sets(norms, lengths, rel=0.05)  # now token t's leak (0.1) counts too
    for i, n in enumerate(lengths):
        for t in range(n):
            assert set(np.flatnonzero(loose[i, t])) == {n - 1 - t, t}


# -- a trained model --------------------------------------------------------------------------


def test_tiny_transformer_learns_and_entropy_finds_the_source(trained_transformer):
    model, report = trained_transformer
    assert report.accuracy >= 0.9
    b = rv.make_batch(16, SMALL, seed=11)
    exp = rx.run_experiment(model, b, methods=("entropy", "saliency"), max_steps=30, n_swaps=2, progress=False)
    lengths = exp.lengths
    chance = np.mean(1.0 / lengths)  # a random ranking puts the source first 1/n of the time
    rows = {r["method"]: r for r in rx.summarize(exp)}
    diag = rows["entropy"]["diag"]
    assert diag[1] > chance + 0.2, (diag, chance)  # the interval's low end, well above chance
    # Saliency's L2 norm is the Jacobian norm itself: it matches the truth by construction
    ok = ~np.isnan(exp.jacobian)
    assert np.allclose(exp.scores["saliency"][ok], exp.jacobian[ok], rtol=1e-4, atol=1e-6)
    assert rows["saliency"]["set_hit"][0] == 1.0
    truth = rx.truth_summary(exp)
    assert truth["swap_source"][0] > 0.9  # the emitted token is the source: swapping it flips it
    assert np.nanmean(exp.correct) > 0.9


def test_run_experiment_rejects_bad_arguments(trained_transformer):
    model, _ = trained_transformer
    b = rv.make_batch(2, SMALL, seed=0)
    with pytest.raises(ValueError, match="unknown method"):
        rx.run_experiment(model, b, methods=("shap",), progress=False)
    with pytest.raises(ValueError, match="layers must be ints"):
        rx.run_experiment(model, b, layers=(3,), progress=False)
    with pytest.raises(ValueError, match="layer_methods"):
        rx.run_experiment(model, b, layers=(1,), layer_methods=("saliency",), progress=False)
    lstm = rv.build_model(SMALL, rv.ModelConfig("lstm", dim=8, hidden=16))
    with pytest.raises(ValueError, match="ReverseTransformer"):
        rx.run_experiment(lstm, b, layers=(1,), progress=False)


@pytest.mark.slow
def test_benchmark_script_quick_run(tmp_path):
    findings = tmp_path / "findings.md"
    findings.write_text("# Findings\n\nhand-written text stays.\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reverse_task.py"), "--quick", "--cache", str(tmp_path / "c"),
           "--findings", str(findings), "--sequences", "12", "--max-steps", "10"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    text = findings.read_text()
    assert "hand-written text stays." in text and "source ranked first" in text and "--quick" in text
    figures = sorted(p.name for p in (tmp_path / "c" / "quick" / "figures").glob("*.png"))
    assert {"entropy.png", "layer_ig.png", "jacobian.png", "token_swap.png"} <= set(figures)
    first = text
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT).returncode == 0  # loads the cache
    again = findings.read_text()  # the block was replaced, not appended
    assert again.count("reverse-task:begin") == 1 and len(again) == pytest.approx(len(first), rel=0.05)


def test_a_run_with_a_work_folder_resumes_without_recomputing(trained_transformer, tmp_path, monkeypatch):
    """Each (step, method)'s scores are kept as soon as computed; a second run with the same model,
    batch and settings reads them all back (nothing explained again) and gives the same scores,
    and a run with another batch or other settings keeps its steps apart instead of mixing."""
    model, _ = trained_transformer
    b = rv.make_batch(4, SMALL, seed=5)
    kw = dict(methods=("entropy", "saliency"), max_steps=5, n_swaps=0, progress=False, work=tmp_path / "steps")
    first = rx.run_experiment(model, b, **kw)
    (run,) = (tmp_path / "steps").iterdir()
    kept = sorted(p.name for p in run.iterdir())
    assert len(kept) == 2 * int(b.lengths.max()) and not [p for p in kept if p.startswith(".")]  # no temp file

    def no_explaining(*args, **kwargs):
        raise AssertionError("a kept step was explained again")

    monkeypatch.setattr(rx, "_explain_step", no_explaining)
    again = rx.run_experiment(model, b, **kw)
    for m in ("entropy", "saliency"):
        assert np.array_equal(first.scores[m], again.scores[m], equal_nan=True), m
    assert first.converged == again.converged
    monkeypatch.undo()
    rx.run_experiment(model, rv.make_batch(4, SMALL, seed=6), **kw)  # another batch: its own folder
    rx.run_experiment(model, b, **{**kw, "max_steps": 6})  # other settings: their own folder too
    assert len(list((tmp_path / "steps").iterdir())) == 3
