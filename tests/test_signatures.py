"""The main entry points spell out their main settings (IDEs and help() show them), a keyword left
unset leaves the default or the preset's value, and the old spellings still work with a warning."""

from __future__ import annotations

import inspect
import typing

import pytest
import torch

from captum_entropy import EntropyAttribution, Explainer, explain
from captum_entropy.settings import DEFAULT, Settings, Unset, given

from .tiny_models import bert_logits

MAIN = ("tolerance", "feature_std", "mask", "pad_token_id", "max_sigma", "method", "max_steps", "n_samples", "seed",
        "internal_batch_size", "show_progress")


@pytest.mark.parametrize("function", [EntropyAttribution.attribute, EntropyAttribution.attribute_result])
def test_attribute_and_explain_name_their_main_settings(function):
    params = inspect.signature(function).parameters
    for name in ("preset", *MAIN):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY and params[name].annotation != inspect._empty
    assert params["settings"].kind is inspect.Parameter.VAR_KEYWORD  # the rest, documented in Settings


def test_return_convergence_delta_has_one_overload_per_return_type():
    overloads = typing.get_overloads(EntropyAttribution.attribute)
    assert len(overloads) == 2
    delta = [inspect.signature(o).parameters["return_convergence_delta"].annotation for o in overloads]
    assert delta == ["Literal[False]", "Literal[True]"]
    assert [inspect.signature(o).return_annotation.startswith("tuple") for o in overloads] == [False, True]


def test_the_one_liner_names_its_main_settings():
    params = inspect.signature(explain).parameters
    for name in ("layers", "output", "feature_std", "feature_std_texts", "tolerance", "method", "max_steps",
                 "n_samples", "seed", "internal_batch_size", "show_progress"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_an_unset_keyword_leaves_the_preset_its_value():
    assert given(tolerance=DEFAULT, max_steps=7) == {"max_steps": 7} and repr(DEFAULT) == "default"
    assert given(tolerance=Unset.tolerance, seed=Unset.seed) == {} and repr(Unset.tolerance) == "0.05"  # help()
    guan = Settings.from_kwargs("guan2019", **given(tolerance=Unset.tolerance, max_steps=Unset.max_steps))
    assert guan.tolerance is None and guan.entropy_weight == 0.1 and guan.optim.max_steps == 5000


def test_named_and_keyword_settings_give_the_same_answer(bert, bert_batch):
    ids, mask = bert_batch
    ea = EntropyAttribution(bert_logits(bert), bert.bert.embeddings)
    kw = {"target": 0, "additional_forward_args": (mask,)}
    named = ea.attribute(ids, **kw, max_steps=3, n_samples=4, seed=3, tolerance=0.1)
    loose = ea.attribute(ids, **kw, **{"max_steps": 3, "n_samples": 4, "seed": 3, "tolerance": 0.1})
    other_seed = ea.attribute(ids, **kw, max_steps=3, n_samples=4, seed=4, tolerance=0.1)
    assert torch.equal(named, loose) and not torch.equal(named, other_seed)  # the named seed is used
    with pytest.raises(TypeError, match="unknown setting"):
        ea.attribute(ids, **kw, max_stpes=3)


def test_the_old_feature_std_keywords_warn_and_name_the_new_one():
    from captum_entropy import compare
    from captum_entropy.evaluate import evaluate

    for call, new in [(lambda: Explainer("no-such-model", stats="S"), r"Explainer\(feature_std=\.\.\.\)"),
                      (lambda: Explainer("no-such-model", stats_texts=["a"]), r"Explainer\(feature_std_texts=\.\.\.\)"),
                      (lambda: compare(["no-such-model"], ["a film"], stats_texts=["a"]), r"compare\(feature_std_texts"),
                      (lambda: evaluate("no-such-model", ["a film"], stats="S"), r"evaluate\(feature_std=")]:
        with pytest.deprecated_call(match=new), pytest.raises(ValueError, match="unknown zoo model"):
            call()  # the keyword is read (and warned about) before the model is looked up
    ex = Explainer.__new__(Explainer)
    ex.feature_std = "S"
    with pytest.deprecated_call(match="Explainer.feature_std"):
        assert ex.stats == "S"


def test_the_old_method_name_warns_and_gives_the_same_result(bert, bert_batch):
    ids, mask = bert_batch
    ea = EntropyAttribution(bert_logits(bert), bert.bert.embeddings)
    kw = dict(target=0, additional_forward_args=(mask,), method="linearized")
    with pytest.deprecated_call(match=r"attribute_result\(\)"):
        old = ea.explain(ids, **kw)
    assert torch.equal(old.sigma.nan_to_num(), ea.attribute_result(ids, **kw).sigma.nan_to_num())  # NaN: padding


def test_explanations_name_their_features_and_the_old_name_warns(tmp_path):
    """A LayerExplanation's and a ModelComparison's columns are features (a hidden layer's output
    or the prediction), not layers; ``.layers`` warns; files saved under the old key still load."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from captum_entropy import LayerExplanation
    from captum_entropy import explain_layers

    emb, enc, head = torch.nn.Embedding(9, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
    forward = lambda ids: head(enc(emb(ids)).mean(1))  # noqa: E731
    ex = explain_layers(forward, emb, torch.tensor([[3, 4, 5]]), layers={"enc": enc}, method="linearized")
    assert ex.features == ["enc", "output"]
    with pytest.deprecated_call(match="LayerExplanation.features"):
        assert ex.layers == ex.features
    ex.save(tmp_path / "new.safetensors")
    with safe_open(str(tmp_path / "new.safetensors"), framework="pt") as f:
        meta, tensors = json.loads(f.metadata()["json"]), {k: f.get_tensor(k) for k in f.keys()}
    meta["layers"] = meta.pop("features")  # as files were written before the rename
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"json": json.dumps(meta)})
    assert LayerExplanation.load(tmp_path / "old.safetensors").features == ["enc", "output"]
    fields = {k: getattr(ex, k) for k in ("model", "depth", "texts", "groupings", "n_dims", "label_names", "settings",
                                          "token_entropy", "token_kept", "log_sigma", "mask", "max_sigma", "saturated",
                                          "converged", "stationarity", "distortion", "steps", "prediction",
                                          "probability", "target")}
    with pytest.deprecated_call(match=r"LayerExplanation\(features=\.\.\.\)"):
        assert LayerExplanation(layers=["enc", "output"], **fields).features == ["enc", "output"]


def test_a_result_names_its_feature_and_the_old_name_warns(bert, bert_batch):
    ids, mask = bert_batch
    res = EntropyAttribution(bert_logits(bert), bert.bert.embeddings).attribute_result(
        ids, target=0, additional_forward_args=(mask,), method="linearized")
    assert res.feature == "output" and res.layer_shape == (*ids.shape, 16)  # layer_*: the layer that got the noise
    with pytest.deprecated_call(match="EntropyResult.feature"):
        assert res.layer == "output"


def test_an_old_and_a_new_keyword_together_are_an_error():
    with pytest.raises(TypeError, match="both stats= and feature_std="):
        Explainer("no-such-model", stats="A", feature_std="B")
    from captum_entropy.evaluate import evaluate

    with pytest.raises(TypeError, match="both stats= and feature_std="):
        evaluate("no-such-model", ["a film"], stats="A", feature_std="B")


def test_help_shows_the_real_defaults():
    """What help() prints for an unset keyword is the value the settings take when it is unset."""
    from captum_entropy.optim import OptimSettings

    s, o = Settings(), OptimSettings()
    shown = {k: repr(getattr(Unset, k)) for k in MAIN}
    assert shown["tolerance"] == repr(s.tolerance) and shown["seed"] == repr(s.seed)
    assert shown["max_steps"] == repr(o.max_steps) and shown["method"] == repr(o.method)
    assert shown["show_progress"] == repr(s.show_progress) and shown["internal_batch_size"] == repr(s.internal_batch_size)
    assert shown["feature_std"] == shown["mask"] == shown["pad_token_id"] == "None" and s.feature_std is s.mask is None
    from captum_entropy.settings import MAX_SIGMA_FACTOR
    from captum_entropy.optim_settings import SMALL_FEATURE_SAMPLES

    assert shown["max_sigma"] == f"{MAX_SIGMA_FACTOR:g} × std" and shown["n_samples"] == f"{SMALL_FEATURE_SAMPLES} or 16"


def test_explain_layers_lives_beside_explainer_and_its_old_path_warns():
    from captum_entropy import explain_layers, layerwise

    assert explain_layers is layerwise.explain_layers
    with pytest.deprecated_call(match="captum_entropy.explain_layers"):
        from captum_entropy.analysis import explain_layers as old
    assert old is explain_layers
