"""benchmarks/findings_tables.py: the per-sentence measures of docs/findings.md read the fair
(per-dimension) word readings, and its perturbed copies move each word by exactly its own error."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from .test_readings import explanation

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def T(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("findings_tables")


def _with_errors(se: float):
    ex = explanation()  # words good (2.0 nats/dim), porridge (two pieces, 2.0 each), film (1.0); [CLS] 0.5
    ex.log_sigma_se = torch.full_like(ex.log_sigma, se)
    return ex


def test_copies_move_each_word_by_its_own_error_and_the_estimate_is_row_zero(T):
    ex = _with_errors(0.1)
    r = T.readings(ex, f=1, b=0, seed=5)
    assert r.words == ["good", "porridge", "film"] and r.special_names == ["[CLS]", "[SEP]"]
    np.testing.assert_allclose(r.kept[0], ex.word_kept(0)[1].double().numpy())
    expected = np.random.default_rng(5).standard_normal((T.DRAWS, 3)) * 0.1
    np.testing.assert_allclose(r.kept[1:] - r.kept[0], expected, atol=1e-12)
    np.testing.assert_allclose(r.entropy + r.kept, np.broadcast_to(r.entropy[0] + r.kept[0], r.kept.shape), atol=1e-12)
    assert r.se_known and T.noise_floor(r) == pytest.approx(float(np.sqrt((expected ** 2).mean())))
    assert not T.readings(explanation(), 1, 0, seed=5).se_known  # errors not measured: NaN, no perturbation


def test_measures_on_the_estimate_have_their_closed_forms(T):
    r = T.readings(_with_errors(0.0), f=0, b=0, seed=0)
    mean_kept = 5.0 / 3.0
    assert T.contrast_on(r, {"good"})[0] == pytest.approx(2.0 - mean_kept)
    np.testing.assert_allclose(r.kept[0] - r.kept[0].mean(), explanation().word_contrast(0)[0].double().numpy(), atol=1e-6)
    # a word cut in two pieces has the contrast of a one-piece word with the same σ
    assert T.contrast_on(r, {"porridge"})[0] == pytest.approx(T.contrast_on(r, {"good"})[0])
    assert T.contrast_on(r, {"absent"}) is None and T.contrast_on(r, {"good", "porridge", "film"}) is None
    assert T.fraction_on(r, {"film"}) == pytest.approx(1 / 3)
    assert T.spread(r)[0] == pytest.approx(np.std([2.0, 2.0, 1.0], ddof=1))
    assert T.top_contrast(r)[0] == pytest.approx(2.0 - mean_kept)
    assert T.special_ratio(r, "[CLS]")[0] == pytest.approx(0.5 / mean_kept)
    assert T.mean_entropy(r)[0] == pytest.approx(float(explanation().word_entropy(0)[0].mean()))
    assert np.ptp(T.contrast_on(r, {"good"})) == 0  # no error, no spread


def test_order_measures_count_pairs_whose_intervals_are_apart(T):
    m = T.order_measures([_with_errors(0.0)], 0)
    assert m["ordered"][0][0] == pytest.approx(2 / 3)   # good > film, porridge > film; good ~ porridge
    assert m["ambiguous"][0][0] == 0 and m["half_width"][0][0] == 0
    wide = T.order_measures([_with_errors(1.0)], 0)
    assert wide["ordered"][0][0] == 0 and wide["undetermined"][0][0] == 1


def test_departures_separate_a_common_offset_from_a_reordering(T):
    ex = _with_errors(0.01)
    ex.linear_log_sigma = ex.log_sigma - 0.3  # the linearised answer: every word 0.3 nats/dim tighter
    d = T.departures([ex], 0)
    assert d["abs"][0][0] == pytest.approx(0.3) and d["spread"][0][0] == pytest.approx(0.0, abs=1e-6)
    assert d["spearman"][0][0] == pytest.approx(1.0) and d["beyond"][0][0] == 0 and d["flat"][0][0] == 0
    ex.linear_log_sigma[:, :, 4] -= 3.0  # "film" now the linearised answer's most kept word
    d = T.departures([ex], 0)
    assert d["spearman"][0][0] < 0 and d["beyond"][0][0] == 1.0  # every centred Δ is ≥ 1 nat/dim, far past 0.02
    assert d["spread"][0][0] == pytest.approx(np.std([0.3, 0.3, 3.3], ddof=1), rel=1e-5)
    ex.linear_log_sigma[:] = math.log(2.0)  # the linearised answer lets every word take the cap
    d = T.departures([ex], 0)
    assert d["flat"][0][0] == 1 and 0 not in d["spearman"] and 0 not in d["abs"]  # counted, not compared
    assert T.departures([explanation()], 0)["flat"] == {}  # no linearised σ saved: skipped, not guessed


def test_departures_judge_only_words_with_a_measured_error(T):
    ex = _with_errors(0.01)
    ex.linear_log_sigma = ex.log_sigma.clone()
    ex.linear_log_sigma[:, :, 4] -= 3.0              # "film" departs by 3 nats/dim
    ex.log_sigma_se[:, :, 4] = 0.0                    # ... but sits at the cap (error 0): not judged
    assert T.departures([ex], 0)["beyond"][0][0] == 1.0  # good and porridge: centred Δ = −1, far past 0.02  # no linearised σ saved: skipped, not guessed


def test_a_rerun_with_another_chunk_size_computes_only_the_gaps(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    common = importlib.import_module("common")
    for a, b in ((0, 8), (8, 16), (40, 48)):  # two processes, one from each end, stopped part way
        (tmp_path / f"m-layers-{a:04d}-{b:04d}.st").touch()
    assert common.missing_chunks(tmp_path, "m-layers", ".st", 48, 20) == [(16, 36), (36, 40)]
    assert common.missing_chunks(tmp_path, "m-layers", ".st", 60, 8) == [(16, 24), (24, 32), (32, 40), (48, 56), (56, 60)]
    for a, b in ((16, 36), (36, 40)):
        (tmp_path / f"m-layers-{a:04d}-{b:04d}.st").touch()
    assert [p.name for p in common.covering(tmp_path, "m-layers", ".st")][-2:] == ["m-layers-0036-0040.st", "m-layers-0040-0048.st"]
    assert common.missing_chunks(tmp_path, "m-layers", ".st", 48, 20) == []
