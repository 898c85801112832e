"""Saved files: results, statistics and checkpoints that are damaged or of another kind are refused
with an error naming the file, the problem and the fix (cases of the bad-input matrix, run as in
``tests/bad_input_world.py``); strings in result files are never opened as paths; no pickle in
the package; writes are atomic; and every file ``save()`` writes loads back exactly.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from captum_entropy import EntropyResult, FeatureStats

from .bad_input_world import P, World, run_case
from .invariants import same_tensor

FIX_CHECKPOINT = r"train again \(`captum-entropy train cnn`"
FIX_FILE = r"write it again with \.save\(\)"


def _cut(path: Path, keep: float = 0.5) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def _random_bytes(w: World) -> Path:
    path = w.tmp / "random.safetensors"
    path.write_bytes(os.urandom(4096))
    return path


def _safetensors(w: World, tensors: dict, meta) -> Path:
    path = w.tmp / "crafted.safetensors"
    save_file(tensors, str(path), metadata=None if meta is None else {"json": meta if isinstance(meta, str) else json.dumps(meta)})
    return path


def _result_missing_keys(w: World):
    from safetensors.torch import load_file

    src = w.result_file()
    tensors = load_file(str(src))
    del tensors["converged"], tensors["losses"]
    meta = {"n_dims": 3, "layer": "output", "layer_shape": [2, 4, 3]}
    path = _safetensors(w, tensors, meta)
    return lambda: EntropyResult.load(path)


def _result_meta(w: World, **change):
    from safetensors.torch import load_file

    tensors = load_file(str(w.result_file()))
    meta = {"n_dims": 3, "layer": "output", "layer_shape": [2, 4, 3], "layer_dtype": "float32", **change}
    path = _safetensors(w, tensors, meta)
    return lambda: EntropyResult.load(path)


def _checkpoint_missing_keys(w: World):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from captum_entropy.zoo import load

    src = w.checkpoint()
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(src))
    state.pop(next(k for k in state if k.startswith("head")))
    save_file(state, str(src), metadata=meta)
    return lambda: load("cnn", path=src, train_if_missing=False)


def _checkpoint_meta(w: World):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from captum_entropy.zoo import load

    src = w.checkpoint()
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["json"])
    del meta["config"]
    save_file(load_file(str(src)), str(src), metadata={"json": json.dumps(meta)})
    return lambda: load("cnn", path=src, train_if_missing=False)


def _checkpoint_cut(w: World):
    from captum_entropy.zoo import load

    path = _cut(w.checkpoint())
    return lambda: load("cnn", path=path, train_if_missing=False)


FILE_CASES = [
    P(lambda w: (lambda p: lambda: EntropyResult.load(p))(_cut(w.result_file())), ValueError,
      r"not a complete safetensors file .*cut short.*" + FIX_FILE, id="result-file-cut-in-half"),
    P(lambda w: (lambda p: lambda: EntropyResult.load(p))(_random_bytes(w)), ValueError,
      r"not a complete safetensors file.*" + FIX_FILE, id="result-file-random-bytes"),
    P(_result_missing_keys, ValueError, r"is not an EntropyResult file: it lacks \['converged', 'losses'\].*write it again",
      id="result-file-missing-keys"),
    P(lambda w: (lambda p: lambda: EntropyResult.load(p))(_safetensors(w, {"sigma": torch.ones(1)}, "{not json")), ValueError,
      r"metadata is not valid JSON.*" + FIX_FILE, id="result-file-bad-json"),
    P(lambda w: (lambda p: lambda: EntropyResult.load(p))(_safetensors(w, {"sigma": torch.ones(1)}, [1, 2])), ValueError,
      r"JSON metadata is a list, not an object.*" + FIX_FILE, id="result-file-json-not-an-object"),
    P(lambda w: _result_meta(w, layer_dtype="os.system"), ValueError, r"not a torch dtype: 'os\.system'.*write it again",
      id="result-file-dtype-not-a-dtype"),
    P(lambda w: _result_meta(w, n_dims="3"), ValueError, r"metadata .* has the wrong types.*write it again",
      id="result-file-wrong-metadata-types"),
    P(lambda w: _result_meta(w, layer_shape=[5, 4, 3]), ValueError, r"tensors do not fit together.*write it again",
      id="result-file-inconsistent-shapes"),
    P(lambda w: (lambda p: lambda: EntropyResult.load(p))(w.stats_file()), ValueError,
      r"not an EntropyResult file: it lacks .*load it with the matching class", id="result-load-of-a-stats-file"),
    P(lambda w: (lambda p: lambda: FeatureStats.load(p))(_cut(w.stats_file(), 0.3)), ValueError,
      r"cannot read .* as a FeatureStats file: it is not a complete safetensors file.*" + FIX_FILE,
      id="stats-file-cut-short"),
    P(lambda w: (lambda p: lambda: FeatureStats.load(p))(_safetensors(w, {"std/l": torch.ones(3)}, {"rel_floor": "x"})),
      ValueError, r"not a FeatureStats file: its rel_floor is 'x'.*write it again", id="stats-file-wrong-metadata"),
    P(lambda w: (lambda p: lambda: FeatureStats.load(p))(w.result_file()), ValueError,
      r"not a FeatureStats file: its tensors are .* not 'std/NAME'.*matching class", id="stats-load-of-a-result-file"),
    P(_checkpoint_cut, ValueError, r"as a cnn checkpoint: it is not a complete safetensors file.*" + FIX_CHECKPOINT,
      id="checkpoint-cut-in-half"),
    P(lambda w: (lambda p: lambda: __import__("captum_entropy.zoo", fromlist=["load"]).load(
        "cnn", path=p, train_if_missing=False))(_random_bytes(w)), ValueError,
      r"not a complete safetensors file.*" + FIX_CHECKPOINT, id="checkpoint-random-bytes"),
    P(_checkpoint_missing_keys, ValueError, r"does not fit the zoo model 'cnn' \(.*Missing key.*head.*" + FIX_CHECKPOINT,
      id="checkpoint-missing-keys"),
    P(_checkpoint_meta, ValueError, r"does not fit the zoo model 'cnn' \(missing metadata 'config'\).*" + FIX_CHECKPOINT,
      id="checkpoint-wrong-metadata"),
]


@pytest.mark.parametrize("make, expected, match", FILE_CASES)
def test_bad_input(make, expected, match, tmp_path):
    world = World(tmp_path)
    run_case(world, make(world), expected, match)


def test_paths_in_result_files_are_never_opened(tmp_path):
    # every string a result file carries is data: a "feature" name that looks like a path is just a name
    w = World(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = w.explain_lin(feature_std=torch.ones(2))
    res.feature, res.settings = str(tmp_path / "missing" / "evil.safetensors"), {"stats": "/etc/shadow"}
    res.save(tmp_path / "r.safetensors")
    back = EntropyResult.load(tmp_path / "r.safetensors")
    assert back.feature == res.feature and back.settings == res.settings
    assert not (tmp_path / "missing").exists()


def test_no_pickle_anywhere_in_the_package():
    # results, statistics and checkpoints are safetensors + JSON; torch.load only with weights_only=True
    package = Path(__file__).parents[1] / "captum_entropy"
    offences = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offences.append(f"{path.name}: torch.load without weights_only=True")
        if re.search(r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|cloudpickle)\b", text, re.M):
            offences.append(f"{path.name}: imports a pickle library")
        if re.search(r"allow_pickle\s*=\s*True", text):
            offences.append(f"{path.name}: numpy allow_pickle=True")
    assert offences == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from captum_entropy import _io

    w = World(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = w.explain_lin(feature_std=torch.ones(2))
    path = tmp_path / "out" / "result.safetensors"
    res.save(path)
    good = path.read_bytes()

    real_write = _io.atomic_write

    def crash(path, write):  # the real atomic write, whose writer writes half a file, then the process dies
        def half_then_die(f):
            f.write(good[: len(good) // 2])
            raise KeyboardInterrupt

        return real_write(path, half_then_die)

    monkeypatch.setattr(_io, "atomic_write", crash)
    with pytest.raises(KeyboardInterrupt):
        res.save(path)
    assert path.read_bytes() == good and sorted(p.name for p in path.parent.iterdir()) == ["result.safetensors"]
    assert torch.equal(EntropyResult.load(path).sigma, res.sigma)


def test_valid_files_still_load_exactly(tmp_path):
    # the checks on loading reject nothing that save() writes
    from captum_entropy.zoo import load

    w = World(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = w.explain(target_layer=[w.bert.bert.encoder.layer[0]], mask=w.mask)[0]
    res.save(tmp_path / "r.safetensors")
    back = EntropyResult.load(tmp_path / "r.safetensors")
    for name in ("sigma", "mask", "max_sigma", "steps", "losses", "stationarity", "linear_sigma"):
        assert same_tensor(getattr(back, name), getattr(res, name)), name
    assert (back.feature, back.layer_shape, back.n_dims, back.settings) == (res.feature, res.layer_shape, res.n_dims, res.settings)
    assert torch.equal(back.attribution(), res.attribution())

    stats = FeatureStats().fit(w.f, [(w.ids, w.mask)], layers={"l1": w.bert.bert.encoder.layer[0], "output": None},
                               mask_index=1, model_name="tiny")
    stats.save(tmp_path / "s.safetensors")
    loaded = FeatureStats.load(tmp_path / "s.safetensors")
    assert loaded.n_ == stats.n_ and loaded.meta_ == stats.meta_ and loaded.rel_floor == stats.rel_floor
    assert all(torch.equal(loaded.std_[k], stats.std_[k]) and torch.equal(loaded.mean_[k], stats.mean_[k]) for k in stats.std_)

    path = w.checkpoint()
    zm = load("cnn", path=path, train_if_missing=False)
    ids, mask = torch.tensor([[2, 3, 0]]), torch.tensor([[1, 1, 0]])
    assert torch.equal(zm.forward(ids, mask), w.models[-1](ids, mask))
