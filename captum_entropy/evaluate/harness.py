"""The head-to-head: every method on the same model, sentences and words, scored for faithfulness.

>>> from captum_entropy.evaluate import evaluate                            # doctest: +SKIP
>>> ev = evaluate("cnn", texts, methods=["entropy", "saliency", "layer_ig", "random"])  # doctest: +SKIP
>>> print(ev.to_markdown())                                                   # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .._deprecated import renamed_keyword
from .faithfulness import HIGHER_IS_BETTER, METRICS, REMOVALS, Perturber, embedding_stats, faithfulness
from .methods import Task, entropy_layer, entropy_logit, methods_from
from .statistics import bootstrap_ci, win_tie_loss

FORMAT = "captum_entropy.Evaluation/1"


def evaluate(model: Any, texts: Sequence[str], tokenizer: Any = None,
             methods: Any = ("entropy", "saliency", "input_x_gradient", "layer_ig", "random"),
             removals: Sequence[str] = REMOVALS, batch_size: int = 16, perturb_batch_size: int = 256,
             feature_std: Any = None, seed: int = 0, progress: bool = True,
             entropy_settings: dict | None = None, stats: Any = None) -> "Evaluation":
    """Score ``methods`` on ``model`` (a zoo name, ZooModel or HF classifier + ``tokenizer``) and
    ``texts``: word scores per method (sentences in batches of ``batch_size``), then every
    faithfulness metric under every removal in ``removals``, all perturbed copies batched.

    Args:
        methods: names (:data:`~captum_entropy.evaluate.methods.METHODS`), Captum classes or
            instances, ``captum.attr`` names, callables ``task -> scores``, or a mapping
            name -> any of these.
        feature_std: σ_S for the entropy methods (default: fitted and cached as in ``explain``);
            ``stats`` is its deprecated spelling.
        entropy_settings: EntropyAttribution settings (``max_steps``, ``n_samples``, ...).
    """
    from tqdm.auto import tqdm

    from ..explainer import as_zoo_model, check_texts, feature_stats

    feature_std = renamed_keyword("evaluate", "stats", "feature_std", stats, feature_std)
    texts = check_texts(texts)
    zm = as_zoo_model(model, tokenizer)
    chosen = methods_from(methods)
    names = [m.name for m in chosen]
    if len(set(names)) != len(names):
        raise ValueError(f"two methods share a name in {names}; pass a mapping name -> method")
    bad = [r for r in removals if r not in REMOVALS]
    if bad or not removals:
        raise ValueError(f"removals must be a non-empty subset of {REMOVALS}, got {list(removals)}")
    if feature_std is None and any(m.fn in (entropy_logit, entropy_layer) for m in chosen):
        feature_std = feature_stats(zm)
    rows: list[dict] = []
    seconds = {m.name: 0.0 for m in chosen}
    bar = tqdm(total=len(texts) * len(chosen), unit="sentence·method", disable=not progress, desc=zm.name)
    try:
        for start, ids, mask, groups, target, perturbers in _batches(zm, texts, batch_size, removals, perturb_batch_size,
                                                                     seed):
            task = Task(zm, ids, mask, target, groups, feature_std, seed, {"entropy": dict(entropy_settings or {})}, start)
            for m in chosen:
                t = time.perf_counter()
                scores = m(task)
                seconds[m.name] += time.perf_counter() - t
                for r in removals:
                    for b, res in enumerate(faithfulness(perturbers[r], scores)):
                        rows.append({"model": zm.name, "method": m.name, "removal": r, "sentence": start + b,
                                     "prediction": int(target[b]), **res, "scores": scores[b].tolist()})
                bar.update(len(groups))
    finally:
        bar.close()
    return Evaluation(rows, {"models": [zm.name], "sentences": len(texts), "methods": names,
                             "removals": list(removals), "seconds": {zm.name: seconds}, "seed": seed,
                             "entropy_settings": dict(entropy_settings or {})})


def _batches(zm: Any, texts: Sequence[str], batch_size: int, removals: Sequence[str], perturb_batch_size: int,
             seed: int):
    """``(start, ids, mask, groups, target, perturbers)`` per batch of ``texts``; the noise
    removal's statistics are taken over every sentence, as :func:`evaluate` and
    :meth:`Evaluation.rescore` both need them."""
    device = next(iter(zm.model.parameters())).device
    encoded = []
    for start in range(0, len(texts), batch_size):
        ids, mask, groups = zm.encode(texts[start:start + batch_size])
        encoded.append((start, ids.to(device), mask.to(device), list(groups)))
    noise_stats = embedding_stats(zm, [(ids, mask) for _, ids, mask, _ in encoded]) if "noise" in removals else None
    for start, ids, mask, groups in encoded:
        with torch.no_grad():
            target = zm.forward(ids, mask).argmax(-1)
        perturbers = {r: Perturber(zm, ids, mask, groups, target, r, perturb_batch_size, seed, noise_stats, start)
                      for r in removals}
        yield start, ids, mask, groups, target, perturbers


@dataclass
class Evaluation:
    """Per-sentence faithfulness rows (model × method × removal × sentence) and the run's facts.

    ``frame()`` is the long table (pandas), ``summary()`` the means with 95 % bootstrap
    intervals, ``win_tie_loss()`` the paired tests, ``to_markdown()`` / ``to_csv()`` /
    ``plot()`` the outputs. ``Evaluation.combine`` joins evaluations of several models."""

    rows: list[dict]
    meta: dict = field(default_factory=dict)

    @classmethod
    def combine(cls, parts: Sequence["Evaluation"]) -> "Evaluation":
        meta = {"models": [m for p in parts for m in p.meta["models"]], "parts": [p.meta for p in parts]}
        return cls([r for p in parts for r in p.rows], meta)

    def save(self, path: str) -> str:
        """JSON (atomic; no pickle): the rows with their curves and scores, and the facts."""
        import json

        from .._io import write_text

        return write_text(path, json.dumps({"format": FORMAT, "meta": self.meta, "rows": self.rows}))

    @classmethod
    def load(cls, path: str) -> "Evaluation":
        """Read what :meth:`save` wrote (JSON only; a damaged file is a ValueError naming it)."""
        import json

        try:
            data = json.loads(open(path, encoding="utf-8").read())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a saved Evaluation ({err}); write it again with .save()") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a saved Evaluation (format {FORMAT!r} expected)")
        return cls(list(data["rows"]), dict(data["meta"]))

    def rescore(self, model: Any, texts: Sequence[str], tokenizer: Any = None, batch_size: int = 16,
                perturb_batch_size: int = 256, first_sentence: int = 0) -> "Evaluation":
        """Every metric of :data:`METRICS` again from the stored word scores: a metric added
        after the run, without computing a single attribution again. ``model``, ``texts`` and
        ``batch_size`` must be the run's (``first_sentence``: the index its first text has in
        the rows); the metrics the run stored must come out the same, else a ValueError says
        the inputs differ. Returns a new Evaluation with the same rows and meta.

        >>> ev = evaluate("cnn", texts, methods=["entropy", "saliency"])   # doctest: +SKIP
        >>> ev.rescore("cnn", texts).save("ev.json")                       # doctest: +SKIP
        """
        from ..explainer import as_zoo_model, check_texts

        texts = check_texts(texts)
        zm = as_zoo_model(model, tokenizer)
        removals = list(dict.fromkeys(r["removal"] for r in self.rows))
        seed = int(self.meta.get("seed", 0))
        by_key = {(r["method"], r["removal"], r["sentence"]): r for r in self.rows}
        methods = list(dict.fromkeys(r["method"] for r in self.rows))
        rows = {}
        for start, _, _, groups, target, perturbers in _batches(zm, texts, batch_size, removals, perturb_batch_size,
                                                                 seed):
            index = [first_sentence + start + b for b in range(len(groups))]
            for method in methods:
                for removal in removals:
                    old = [by_key.get((method, removal, i)) for i in index]
                    if any(r is None for r in old):
                        raise ValueError(f"rescore: no {method}/{removal} row for sentences {index}; pass the run's "
                                         "texts, batch_size and first_sentence")
                    scores = [torch.tensor(r["scores"], dtype=torch.float64) for r in old]
                    if [len(x) for x in scores] != [g.n_words for g in groups]:
                        raise ValueError(f"rescore: sentences {index} have {[g.n_words for g in groups]} words, the run "
                                         f"scored {[len(x) for x in scores]}; pass the run's texts and batch_size")
                    for r, new, t in zip(old, faithfulness(perturbers[removal], scores), target.tolist()):
                        _check_same(r, new, t)
                        rows[(method, removal, r["sentence"])] = {**r, **new}
        if len(rows) != len(self.rows):
            raise ValueError(f"rescore: the texts cover {len(rows)} of the {len(self.rows)} rows; pass every text of the run")
        return Evaluation([rows[(r["method"], r["removal"], r["sentence"])] for r in self.rows], dict(self.meta))

    def frame(self):
        """One row per (model, method, removal, sentence) with every metric (pandas)."""
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in r.items() if not k.endswith("_curve") and k not in ("scores", "loo")}
                             for r in self.rows])

    def summary(self, n_boot: int = 2000, seed: int = 0):
        """Per model, removal, method and metric: mean, 95 % bootstrap interval, n (pandas)."""
        import pandas as pd

        df, out = self.frame(), []
        for (model, removal, method), g in df.groupby(["model", "removal", "method"], sort=False):
            for metric in _present(df):
                v = g[metric].to_numpy(dtype=float)
                finite = v[np.isfinite(v)]
                mean, lo, hi = bootstrap_ci(finite, n_boot, seed=seed) if finite.size else (math.nan,) * 3
                out.append({"model": model, "removal": removal, "method": method, "metric": metric, "mean": mean,
                            "lo": lo, "hi": hi, "n": int(finite.size)})
        return pd.DataFrame(out)

    def win_tie_loss(self, reference: str = "entropy", alpha: float = 0.05):
        """``reference`` against every other method, per model, removal and metric: paired
        Wilcoxon over sentences, Holm-corrected over the reference's comparisons within each
        (model, removal, metric) (pandas)."""
        import pandas as pd

        df, out = self.frame(), []
        for (model, removal), g in df.groupby(["model", "removal"], sort=False):
            wide = {m: gm.sort_values("sentence") for m, gm in g.groupby("method", sort=False)}
            if reference not in wide:
                raise ValueError(f"no method {reference!r} in this evaluation; it has {sorted(wide)}")
            for metric in _present(df):
                scores = {m: w[metric].to_numpy(dtype=float) for m, w in wide.items()}
                for row in win_tie_loss(scores, HIGHER_IS_BETTER[metric], alpha, reference=reference):
                    out.append({"model": model, "removal": removal, "metric": metric, **row})
        return pd.DataFrame(out)

    def curves(self, kind: str = "deletion") -> dict[tuple[str, str, str], np.ndarray]:
        """(model, removal, method) -> (sentences, 11) probabilities along the ``kind`` curve
        (``"deletion"``, ``"insertion"``), or ``"deletion_magnitude"``: ``|p0 − p|`` along the
        deletion curve, how far the prediction has moved whichever way, or ``"deletion_logodds"``:
        the same in log-odds of the predicted class, ``|lo0 − lo|``."""
        if kind not in CURVES:
            raise ValueError(f"kind must be one of {CURVES}, got {kind!r}")
        key = {"deletion_magnitude": "deletion_curve", "deletion_logodds": "deletion_logodds_curve"}.get(kind, f"{kind}_curve")
        out: dict[tuple[str, str, str], list] = {}
        for r in self.rows:
            if key not in r:
                raise ValueError(f"this evaluation has no {key!r} (saved before it existed); .rescore() adds it")
            out.setdefault((r["model"], r["removal"], r["method"]), []).append(r[key])
        curves = {k: np.asarray(v, dtype=float) for k, v in out.items()}
        if kind in ("deletion_magnitude", "deletion_logodds"):
            curves = {k: np.abs(c[:, :1] - c) for k, c in curves.items()}
        return curves

    def to_csv(self, path: str) -> str:
        """The long table as CSV (atomic)."""
        from .._io import write_text

        return write_text(path, self.frame().to_csv(index=False))

    def to_markdown(self, digits: int = 3) -> str:
        """Per model and removal: methods × metrics, ``mean [lo, hi]`` (↑ higher is better)."""
        s = self.summary()
        metrics = [m for m in METRICS if m in set(s["metric"])]
        lines = []
        for (model, removal), g in s.groupby(["model", "removal"], sort=False):
            n = int(g["n"].max())
            lines += [f"**{model}**, removal = {removal} (n = {n} sentences)", "",
                      "| method | " + " | ".join(f"{m} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in metrics) + " |",
                      "|---" * (len(metrics) + 1) + "|"]
            for method, gm in g.groupby("method", sort=False):
                cells = {r.metric: f"{r.mean:.{digits}f} [{r.lo:.{digits}f}, {r.hi:.{digits}f}]" for r in gm.itertuples()}
                lines.append(f"| {method} | " + " | ".join(cells[m] for m in metrics) + " |")
            lines.append("")
        return "\n".join(lines)

    def plot(self, kind: str = "deletion", model: str | None = None, removal: str | None = None):
        """The mean ``kind`` curve of each method (95 % bootstrap band) for one model and removal."""
        from ..viz.figures import _figure_class

        curves = self.curves(kind)
        model = model or self.meta["models"][0]
        removal = removal or next(k[1] for k in curves if k[0] == model)
        from matplotlib import colormaps

        fig = _figure_class()(figsize=(8.4, 4.6), layout="constrained")
        ax = fig.add_subplot()
        x = np.linspace(0, 100, 11)
        palette = colormaps["tab20"].colors
        chosen = [k for k in curves if k[:2] == (model, removal)]
        for i, key in enumerate(chosen):
            method, c = key[2], curves[key]
            mean = np.nanmean(c, 0)
            ok = np.isfinite(c).sum(0) >= 5
            band = np.array([bootstrap_ci(col)[1:] if k else (np.nan, np.nan) for col, k in zip(c.T, ok)])
            style = ({"color": "0.45", "ls": "--"} if method == "random" else
                     _ENTROPY_STYLES.get(method, {"color": "black"}) if method.startswith("entropy") else
                     {"color": palette[(2 * i) % 20]})
            line, = ax.plot(x, mean, marker="o", ms=3, lw=2.6 if method.startswith("entropy") else 1.3, label=method,
                            **style)
            if ok.any():
                ax.fill_between(x, band[:, 0], band[:, 1], color=line.get_color(), alpha=0.12, lw=0)
        what = "kept" if kind == "insertion" else "removed"
        ax.set_xlabel(f"words {what}, most important first (% of the sentence)")
        ax.set_ylabel({"deletion_magnitude": "|change of the predicted class's probability|",
                       "deletion_logodds": "|change of the predicted class's log-odds|"}.get(
                          kind, "probability of the predicted class"))
        better = "lower" if kind == "deletion" else "higher"
        n = max(len(c) for (m, r, _), c in curves.items() if (m, r) == (model, removal))
        title = {"deletion_magnitude": "deletion curves by |Δp|", "deletion_logodds": "deletion curves in log-odds"}.get(
            kind, f"{kind} curves")
        ax.set_title(f"{model}: {title}, removal = {removal} ({better} = more faithful; n = {n})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return fig


def _check_same(old: dict, new: dict, target: int) -> None:
    """The run's stored metrics against the rescored ones (the same inputs give the same numbers)."""
    if int(old["prediction"]) != target:
        raise ValueError(f"rescore: sentence {old['sentence']} is now predicted {target}, the run said "
                         f"{old['prediction']}; pass the run's model and texts")
    for metric in [m for m in METRICS if m in old]:
        a, b = float(old[metric]), float(new[metric])
        if not (math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5) or (math.isnan(a) and math.isnan(b))):
            raise ValueError(f"rescore: {old['method']}/{old['removal']} sentence {old['sentence']}: {metric} was "
                             f"{a:.6g}, now {b:.6g}; pass the run's model, texts and batch_size")


CURVES = ("deletion", "insertion", "deletion_magnitude", "deletion_logodds")
# EntropyAttribution's arms, thick and grey-scale, told apart by their dashes
_ENTROPY_STYLES = {"entropy": {"color": "black"}, "entropy_linearized": {"color": "0.5", "ls": (0, (5, 2))},
                   "entropy_layer": {"color": "0.2", "ls": ":"}}


def _present(df) -> list[str]:
    """The metrics of :data:`METRICS` a frame holds (an evaluation saved before the magnitude
    metrics existed has the signed ones only)."""
    return [m for m in METRICS if m in df.columns]
