"""The faithfulness harness: metrics with known answers, statistics on known samples, end to end."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from captum_entropy.evaluate import (Evaluation, Perturber, bootstrap_ci, evaluate, faithfulness, holm,
                                     paired_wilcoxon, register, resolve, win_tie_loss)
from captum_entropy.evaluate.faithfulness import FRACTIONS, LOG_ODDS_METRICS, METRICS, n_top, ranking
from captum_entropy.evaluate.methods import METHODS, Task
from captum_entropy.zoo import ZooModel
from captum_entropy.zoo.text import WordTokenizer

TEXTS = ["the good film was long", "a good plot and a dull cast", "good", "dull and slow but good in parts",
         "the cast was good", "it is good to see"]
STRENGTH = 3.0


class OneWord(nn.Module):
    """Reads one word only: the positive logit is STRENGTH × (channel 0 of the embedding at the
    positions holding "good") − 1.5, so 1.5 for a sentence with one "good" and −1.5 without; no
    other position's embedding (clean or noisy) reaches the output."""

    def __init__(self, tok: WordTokenizer) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        weight = torch.zeros(len(tok), 4)
        weight[2:, 1:] = torch.randn(len(tok) - 2, 3, generator=g)
        weight[tok.index["good"]] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        self.embedding = nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=0)
        self.good = tok.index["good"]
        self.mix, self.mix2 = nn.Linear(4, 4), nn.Linear(4, 4)  # two identity layers (hidden layers to explain)
        with torch.no_grad():
            for layer in (self.mix, self.mix2):
                layer.weight.copy_(torch.eye(4))
                layer.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.mix2(self.mix(self.embedding(input_ids))) * attention_mask[..., None]
        gate = (input_ids == self.good).float()
        pos = STRENGTH * (gate * h[..., 0]).sum(1) - 1.5
        return torch.stack([torch.zeros_like(pos), pos], -1)


@pytest.fixture(scope="module")
def one_word() -> ZooModel:
    tok = WordTokenizer.from_texts(TEXTS)
    model = OneWord(tok).eval()
    return ZooModel("one-word", model, tok, tok.tokens, model.embedding, {"mix": model.mix, "mix2": model.mix2},
                    ("neg", "pos"), {},
                    tokenizer=tok, pad_token_id=0)


def _task(zm, texts=TEXTS):
    ids, mask, groups = zm.encode(texts)
    with torch.no_grad():
        target = zm.forward(ids, mask).argmax(-1)
    return Task(zm, ids, mask, target, groups, seed=0), target


def _p(logit: float) -> float:
    return 1 / (1 + math.exp(-logit))


def test_top_counts_and_ranking():
    assert [n_top(f, 10) for f in FRACTIONS] == list(range(11))
    assert n_top(0.01, 3) == 1 and n_top(0.5, 3) == 2 and n_top(0.0, 3) == 0
    assert ranking(torch.tensor([0.1, 0.5, 0.5, float("nan")])) == [1, 2, 0, 3]


@pytest.mark.parametrize("removal", ["delete", "mask"])
def test_a_faithful_method_on_a_model_that_reads_one_word_scores_the_closed_form(one_word, removal):
    task, target = _task(one_word)
    assert target.tolist() == [1] * len(TEXTS)  # one "good" each: logit 1.5
    per = Perturber(one_word, task.ids, task.mask, task.groupings, target, removal)
    res = faithfulness(per, METHODS["feature_ablation"](task))
    p0, p_without = _p(STRENGTH - 1.5), _p(-1.5)
    for r, text in zip(res, TEXTS):
        W = len(text.split())
        assert r["p0"] == pytest.approx(p0, abs=1e-6)
        # "good" is removed first: every deletion step and every comprehensiveness bin lose it
        assert r["deletion_aopc"] == pytest.approx(p0 - p_without, abs=1e-6)
        assert r["comprehensiveness"] == pytest.approx(p0 - p_without, abs=1e-6)
        assert r["sufficiency"] == pytest.approx(0.0, abs=1e-6)  # "good" alone keeps p0
        # every removal lowers p here, so the magnitudes equal the signed scores
        for metric in ("deletion_aopc", "comprehensiveness", "sufficiency"):
            assert r[f"{metric}_abs"] == pytest.approx(r[metric], abs=1e-9)
        assert r["insertion_aopc"] == pytest.approx(p0 - p_without, abs=1e-6)
        assert r["loo_tau"] == pytest.approx(1.0) if W > 1 else math.isnan(r["loo_tau"])
        assert r["loo_tau_abs"] == pytest.approx(1.0) if W > 1 else math.isnan(r["loo_tau_abs"])
        assert r["loo"][text.split().index("good")] == pytest.approx(p0 - p_without, abs=1e-6)
        assert r["deletion_curve"] == pytest.approx([p0] + [p_without] * 10, abs=1e-6)
    rand = faithfulness(per, METHODS["random"](task))
    assert np.mean([r["comprehensiveness"] for r in rand]) < np.mean([r["comprehensiveness"] for r in res]) - 0.1
    assert np.mean([r["sufficiency"] for r in rand]) > 0.1


def test_entropy_attribution_finds_the_one_word_and_the_harness_runs_end_to_end(one_word, tmp_path):
    class Custom:  # any callable task -> (B, T) scores can be registered
        __name__ = "position"

        def __call__(self, task):
            return torch.arange(task.ids.shape[1], dtype=torch.float).expand(task.ids.shape)

    from captum.attr import Saliency

    ev = evaluate(one_word, TEXTS, methods={"entropy": "entropy", "entropy_layer": "entropy_layer",
                                           "fa": "feature_ablation", "Saliency": Saliency, "random": "random",
                                           "position": Custom()},
                  removals=("delete", "mask", "noise"), batch_size=4, progress=False,
                  feature_std=None, entropy_settings={"max_steps": 30})
    df = ev.frame()
    assert len(df) == 6 * 3 * len(TEXTS) and set(df["method"]) == {"entropy", "entropy_layer", "fa", "Saliency",
                                                                   "random", "position"}
    ent, fa = (df[(df.method == m) & (df.removal == "delete")] for m in ("entropy", "fa"))
    np.testing.assert_allclose(ent["comprehensiveness"], fa["comprehensiveness"], atol=1e-6)  # "good" ranked first
    summary = ev.summary()
    assert set(summary["metric"]) == set(METRICS) == {
        "deletion_aopc", "insertion_aopc", "comprehensiveness", "sufficiency", "loo_tau", "deletion_aopc_abs",
        "comprehensiveness_abs", "sufficiency_abs", "loo_tau_abs", "deletion_aopc_logodds", "comprehensiveness_logodds",
        "sufficiency_logodds", "loo_tau_logodds"}
    wtl = ev.win_tie_loss("entropy")
    assert set(wtl["verdict"]) <= {"win", "tie", "loss"} and len(wtl) == 3 * 13 * 5
    md = ev.to_markdown()
    assert "**one-word**, removal = noise (n = 6 sentences)" in md and "| entropy |" in md
    assert ev.to_csv(str(tmp_path / "ev.csv")).endswith("ev.csv")
    pytest.importorskip("matplotlib")
    from captum_entropy.viz import save_figure

    fig = ev.plot("deletion", removal="mask")
    assert fig.axes[0].get_ylabel() == "probability of the predicted class"
    assert len(fig.axes[0].get_lines()) == 6
    save_figure(fig, tmp_path / "deletion.png")
    magnitude = ev.plot("deletion_magnitude", removal="mask")
    assert magnitude.axes[0].get_ylabel() == "|change of the predicted class's probability|"
    ent_curve = ev.curves("deletion_magnitude")[("one-word", "mask", "entropy")]
    assert (ent_curve[:, 0] == 0).all() and (ent_curve >= 0).all()


def test_batching_never_changes_a_score(one_word):
    task, target = _task(one_word)
    scores = METHODS["random"](task)
    a = faithfulness(Perturber(one_word, task.ids, task.mask, task.groupings, target, "noise", batch_size=1), scores)
    b = faithfulness(Perturber(one_word, task.ids, task.mask, task.groupings, target, "noise", batch_size=500), scores)
    for x, y in zip(a, b):
        assert x["deletion_curve"] == pytest.approx(y["deletion_curve"], abs=1e-6)
        assert x["loo_tau"] == pytest.approx(y["loo_tau"], nan_ok=True)


def test_statistics_on_known_samples():
    m, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0, float("nan")], seed=0)
    assert m == 3.0 and 1.0 <= lo < 3.0 < hi <= 5.0 and (m, lo, hi) == bootstrap_ci([1, 2, 3, 4, 5], seed=0)
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.5, float("nan"), 0.01]) == [0.5, pytest.approx(float("nan"), nan_ok=True), 0.02]
    from scipy.stats import wilcoxon

    a, b = np.arange(10.0), np.arange(10.0) * 0.5
    diff, p, n = paired_wilcoxon(a, b)
    assert n == 9 or n == 10
    assert p == pytest.approx(wilcoxon(a, b).pvalue) and diff == pytest.approx(np.median(a - b))
    assert paired_wilcoxon([1, 2], [1, 2])[1] == 1.0
    rows = win_tie_loss({"good": np.arange(20.0) + 1, "bad": np.zeros(20), "same": np.arange(20.0) + 1})
    verdicts = {(r["method"], r["other"]): r["verdict"] for r in rows}
    assert verdicts == {("good", "bad"): "win", ("good", "same"): "tie", ("bad", "same"): "loss"}
    assert win_tie_loss({"a": [1.0] * 20, "b": [2.0] * 20}, higher_is_better=False)[0]["verdict"] == "win"


def test_methods_by_name_class_instance_and_clear_errors(one_word):
    from captum.attr import FeatureAblation

    task, _ = _task(one_word)
    for m in ("saliency", "IntegratedGradients", "LayerIntegratedGradients", FeatureAblation,
              FeatureAblation(one_word.forward)):
        scores = resolve(m)(task)
        assert len(scores) == len(TEXTS) and all(s.shape == (len(t.split()),) for s, t in zip(scores, TEXTS))
    fa = resolve(FeatureAblation)(task)
    assert all(int(torch.argmax(s)) == t.split().index("good") for s, t in zip(fa, TEXTS))
    register("ones", lambda t: torch.ones(t.ids.shape))
    try:
        assert resolve("ones")(task)[1].tolist() == [1.0] * 7
    finally:
        METHODS.pop("ones")
    with pytest.raises(ValueError, match="unknown method 'nope'.*register"):
        resolve("nope")
    with pytest.raises(TypeError, match="cannot use int"):
        resolve(3)
    with pytest.raises(ValueError, match="removals must be"):
        evaluate(one_word, TEXTS, methods=["random"], removals=("erase",), progress=False)
    with pytest.raises(ValueError, match="share a name"):
        evaluate(one_word, TEXTS, methods=["random", "random"], progress=False)
    combined = Evaluation.combine([evaluate(one_word, TEXTS[:2], methods=["random"], removals=("mask",),
                                            progress=False)] * 2)
    assert len(combined.frame()) == 4


def test_layers_that_compute_the_same_function_are_perfectly_coherent(one_word):
    from captum_entropy.evaluate.coherency import coherency_summary, layer_coherency

    df = layer_coherency(one_word, TEXTS[:4], entropy_settings={"max_steps": 20})
    assert set(df["pair"]) == {"mix→mix2"} and len(df) == 3 * 4
    several = df[df["sentence"] != 2]  # sentence 2 is one word: no ranking
    grad = several[several["method"] != "entropy"]
    np.testing.assert_allclose(grad["tau"], 1.0, atol=1e-9)
    ent = several[several["method"] == "entropy"]["tau"]  # identity layers: rows may tie exactly (NaN)
    assert ent.notna().any() and np.allclose(ent.dropna(), 1.0)
    assert df[df["sentence"] == 2]["tau"].isna().all()
    summary = coherency_summary(df)
    assert set(summary["method"]) == {"entropy", "layer_ig", "layer_gradient_x_activation"}
    with pytest.raises(ValueError, match="knows"):
        layer_coherency(one_word, TEXTS, methods=["saliency"])


def test_scores_do_not_depend_on_how_sentences_are_batched(one_word):
    methods = ["random", "feature_ablation", "gradient_shap", "kernel_shap", "Occlusion", "LayerDeepLift", "DeepLift"]
    runs = [evaluate(one_word, TEXTS, methods=methods, removals=("noise", "mask"), batch_size=n, progress=False)
            for n in (2, 6)]
    a, b = (r.frame().sort_values(["method", "removal", "sentence"]).reset_index(drop=True) for r in runs)
    assert len(a) == len(methods) * 2 * len(TEXTS)
    for metric in ("deletion_aopc", "comprehensiveness", "sufficiency", "loo_tau"):
        np.testing.assert_allclose(a[metric], b[metric], atol=1e-6, equal_nan=True, err_msg=metric)
    again = evaluate(one_word, TEXTS, methods=["kernel_shap"], removals=("mask",), progress=False)
    assert again.rows[0]["scores"] == runs[1].rows[[r["method"] for r in runs[1].rows].index("kernel_shap")]["scores"]


def test_the_verdict_follows_the_side_the_test_found():
    tied = {"a": np.r_[np.zeros(60), np.full(40, 0.2)], "b": np.zeros(100)}
    assert win_tie_loss(tied)[0]["verdict"] == "win"  # the median difference is 0, the test is not
    skewed = {"a": np.r_[np.full(55, -0.01), np.full(45, 0.5)], "b": np.zeros(100)}
    row = win_tie_loss(skewed)[0]
    assert row["verdict"] == "win" and row["shift"] == pytest.approx(0.245)
    three = {"ref": np.arange(30.0), "x": np.zeros(30), "y": np.zeros(30)}
    rows = win_tie_loss(three, reference="ref")
    assert [(r["method"], r["other"]) for r in rows] == [("ref", "x"), ("ref", "y")]  # Holm over 2, not 3


def test_provably_ignored_words_get_nothing_and_a_linear_model_s_contributions_are_recovered():
    from captum_entropy.evaluate.known import BagOfEmbeddings, GatedEmbedding, known_answers
    from captum_entropy.zoo import build

    zm = build("cnn", TEXTS, glove=False, config={"filters": 8})
    keep = torch.ones(len(zm.tokenizer))
    for w in ("the", "a", "and", "was", "is"):
        keep[zm.tokenizer.index[w]] = 0.0
    inner = zm.model.embedding
    zm.model.embedding = GatedEmbedding(inner, keep)
    zm.embedding = inner  # attributions act before the gate
    ignored = keep == 0
    stats_free = {"entropy": "entropy", "saliency": "saliency", "ixg": "input_x_gradient", "random": "random"}
    with warnings.catch_warnings():  # σ_S of an untrained model may be floored (TinyStdWarning) when first fitted
        warnings.simplefilter("ignore")
        df = known_answers(zm, TEXTS, stats_free, ignored=ignored, feature_std=None, entropy_settings={"max_steps": 20})
    by = df.groupby("method")["ignored_share"].mean()
    assert by["saliency"] == 0.0 and by["ixg"] == 0.0 and by["entropy"] == 0.0 and by["random"] > 0.1
    assert df[df.method == "entropy"]["read_auc"].dropna().min() == 1.0

    torch.manual_seed(0)
    tok = zm.tokenizer
    model = BagOfEmbeddings(len(tok), 4).eval()
    from captum_entropy.zoo import ZooModel

    lin = ZooModel("linear", model, tok, tok.tokens, model.embedding, {}, ("neg", "pos"), {}, tokenizer=tok)
    df = known_answers(lin, TEXTS, ["input_x_gradient", "layer_ig", "random"])
    rho = df.groupby("method")["rho_signed"].mean()
    assert rho["input_x_gradient"] == pytest.approx(1.0) and rho["layer_ig"] == pytest.approx(1.0)
    assert rho["random"] < 0.9


def test_magnitude_metrics_credit_a_word_that_pushes_against_the_class():
    """Removing word 0 lowers the predicted class's probability by 0.3, removing word 1 raises it
    by 0.2 (word 2 does nothing). A ranking that puts word 1 first is penalised by the signed
    comprehensiveness (its top word's removal *raises* p) and credited by the magnitude one."""

    class Additive:
        def probabilities(self, requests):
            return [0.6 - 0.3 * (0 in words) + 0.2 * (1 in words) for _, words in requests]

        def log_odds(self, requests):
            return [math.log(p / (1 - p)) for p in self.probabilities(requests)]

    against_first, towards_first = faithfulness(Additive(), [torch.tensor([0.5, 1.0, 0.0]), torch.tensor([1.0, 0.5, 0.0])])
    # the top 1 % / 5 % / 10 % / 20 % are one word, the top 50 % two: comprehensiveness averages 5 bins
    assert against_first["comprehensiveness"] == pytest.approx((4 * -0.2 + 0.1) / 5)
    assert against_first["comprehensiveness_abs"] == pytest.approx((4 * 0.2 + 0.1) / 5)
    assert towards_first["comprehensiveness"] == pytest.approx((4 * 0.3 + 0.1) / 5)
    assert towards_first["comprehensiveness_abs"] == towards_first["comprehensiveness"]
    for r in (against_first, towards_first):
        for metric in ("deletion_aopc", "comprehensiveness", "sufficiency"):
            assert r[f"{metric}_abs"] >= abs(r[metric]) - 1e-12


def test_log_odds_metrics_weigh_a_push_against_a_confident_class_like_one_towards_it():
    """p0 = 0.95: removing word 0 lowers the log-odds by 2, removing word 1 raises them by 2
    (p falls by 0.23, rises by 0.04). The log-odds metrics score the two rankings alike; the
    probability's magnitude metric prefers the word that pushes towards the class."""
    lo0 = math.log(0.95 / 0.05)

    class Logistic:
        def log_odds(self, requests):
            return [lo0 - 2.0 * (0 in words) + 2.0 * (1 in words) for _, words in requests]

        def probabilities(self, requests):
            return [1 / (1 + math.exp(-lo)) for lo in self.log_odds(requests)]

    towards_first, against_first = faithfulness(Logistic(), [torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0.5, 1.0, 0.0])])
    for metric in ("deletion_aopc", "comprehensiveness", "sufficiency"):
        assert towards_first[f"{metric}_logodds"] == pytest.approx(against_first[f"{metric}_logodds"], abs=1e-12)
    assert towards_first["comprehensiveness_logodds"] == pytest.approx((4 * 2.0 + 0.0) / 5)  # the top 50 %: both, net 0
    assert towards_first["comprehensiveness_abs"] > against_first["comprehensiveness_abs"] + 0.1
    assert towards_first["loo_tau_logodds"] == pytest.approx(against_first["loo_tau_logodds"])
    assert towards_first["log_odds0"] == pytest.approx(lo0)


def test_log_odds_come_from_the_logits_where_the_probability_rounds_to_one():
    from captum_entropy.evaluate.faithfulness import _probability_and_log_odds

    p, lo = _probability_and_log_odds(torch.tensor([[40.0, 0.0, 1.0], [0.0, 3.0, 0.0]]), torch.tensor([0, 1]))
    assert p[0] == 1.0 and lo[0] == pytest.approx(40.0 - math.log(math.exp(0.0) + math.exp(1.0)), abs=1e-9)
    assert lo[1] == pytest.approx(3.0 - math.log(2.0), abs=1e-9) and p[1] == pytest.approx(math.exp(3) / (math.exp(3) + 2))


def test_rescore_adds_a_metric_from_the_stored_scores_and_refuses_other_inputs(one_word):
    ev = evaluate(one_word, TEXTS, methods=["feature_ablation", "random"], removals=("delete", "noise"), batch_size=2,
                  progress=False)
    added = set(LOG_ODDS_METRICS) | {"deletion_logodds_curve", "log_odds0"}
    old = Evaluation([{k: v for k, v in r.items() if k not in added} for r in ev.rows], dict(ev.meta))
    again = old.rescore(one_word, TEXTS, batch_size=2)
    assert len(again.rows) == len(ev.rows)
    for a, b in zip(again.rows, ev.rows):
        assert a["deletion_logodds_curve"] == pytest.approx(b["deletion_logodds_curve"])
        assert {k: a[k] for k in added - {"deletion_logodds_curve"}} == pytest.approx(
            {k: b[k] for k in added - {"deletion_logodds_curve"}}, nan_ok=True)
    with pytest.raises(ValueError, match="pass the run's"):
        old.rescore(one_word, list(reversed(TEXTS)), batch_size=2)
    with pytest.raises(ValueError, match="pass the run's"):  # the noise statistics differ on fewer sentences
        old.rescore(one_word, TEXTS[:2], batch_size=2)
    deleted = Evaluation([r for r in old.rows if r["removal"] == "delete"], dict(old.meta))
    with pytest.raises(ValueError, match="pass every text of the run"):
        deleted.rescore(one_word, TEXTS[:2], batch_size=2)
    assert again.curves("deletion_logodds")[("one-word", "delete", "random")].shape == (len(TEXTS), 11)
    with pytest.raises(ValueError, match="rescore"):
        old.curves("deletion_logodds")


def test_cancellation_of_the_top_words_single_word_effects():
    """Words 0 and 1 push the predicted class opposite ways by 0.3 and 0.2 (leave-one-out), word 2
    does nothing. An unsigned ranking that puts both on top holds all the single-word effect
    (share 1) but 0.8 of it cancels (|0.3 − 0.2| of 0.5); a signed ranking's top word pushes one way only."""
    from captum_entropy.evaluate.faithfulness import cancellation

    loo = [0.3, -0.2, 0.0]
    unsigned, signed = [1.0, 0.9, 0.0], [1.0, -0.9, 0.0]
    assert cancellation(unsigned, loo, fractions=(0.5,)) == pytest.approx((1 - 0.1 / 0.5, 1.0))
    assert cancellation(signed, loo, fractions=(0.2,)) == pytest.approx((0.0, 0.6))
    assert all(math.isnan(v) for v in cancellation(unsigned, [0.0, 0.0, 0.0]))


@pytest.mark.parametrize("seed", range(20))
def test_cancellation_is_a_share_and_does_not_see_the_sign_or_scale_of_the_effects(seed):
    from captum_entropy.evaluate.faithfulness import cancellation

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    scores, loo = rng.normal(size=n).tolist(), rng.normal(size=n) * rng.random(n)
    cancel, share = cancellation(scores, loo)
    assert 0.0 <= cancel <= 1.0 and 0.0 < share <= 1.0
    assert cancellation(scores, -3.0 * loo) == pytest.approx((cancel, share))
    assert cancellation(scores, loo, fractions=(1.0,))[1] == pytest.approx(1.0)
