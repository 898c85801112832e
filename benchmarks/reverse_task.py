"""The reversal benchmark: which input does each method credit for each output token?

Trains (or loads from the cache) an LSTM encoder–decoder and a 2-layer encoder-only
Transformer that reverse random sequences (captum_entropy.zoo.reversal), measures with
Jacobians and token swaps what each output step reads, explains every step's emitted-token
logit with EntropyAttribution (two optimiser settings), Saliency, InputXGradient and
LayerIntegratedGradients, and scores them (captum_entropy.evaluate.reversal_experiment). Prints the
tables, writes one heatmap per method and, for the full run, the tables and this command into
docs/reversal.md (between markers; text outside them is kept).

    python benchmarks/reverse_task.py                 # full run (hours on a 2-core CPU; resumes)
    python benchmarks/reverse_task.py --quick         # small run (a minute), findings in the cache dir

Every output step's scores of every method are kept under ``CACHE/steps/KIND/`` as soon as they
are computed: a run killed part way and started again with the same command computes only what
is missing (the tables are written once everything is there).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from captum_entropy.evaluate import reversal_experiment as rx
from captum_entropy.zoo import reversal as rv
from common import format_ci, write_json

BEGIN, END = "<!-- reverse-task:begin -->", "<!-- reverse-task:end -->"

FULL = dict(
    task=rv.TaskConfig(n_symbols=20, min_len=5, max_len=10),
    lstm=(rv.ModelConfig("lstm", dim=32, hidden=128), rv.ReversalTrainConfig(steps=3000)),
    transformer=(rv.ModelConfig("transformer", dim=64, hidden=128, layers=2, heads=4),
                 rv.ReversalTrainConfig(steps=1000)),
    sequences=200, max_steps=100,
)
QUICK = dict(
    task=rv.TaskConfig(n_symbols=8, min_len=3, max_len=6),
    lstm=(rv.ModelConfig("lstm", dim=16, hidden=64), rv.ReversalTrainConfig(steps=600, eval_size=500)),
    transformer=(rv.ModelConfig("transformer", dim=32, hidden=64, layers=2, heads=2),
                 rv.ReversalTrainConfig(steps=400, eval_size=500)),
    sequences=24, max_steps=30,
)
LABELS = {
    "entropy": "EntropyAttribution (defaults)", "entropy_adam": "EntropyAttribution (adam)",
    "saliency": "Saliency (L2)", "input_x_gradient": "InputXGradient", "layer_ig": "LayerIntegratedGradients",
}
EXTRA_LABELS = {"jacobian": "Jacobian norm (ground truth)", "token_swap": "token swaps that flip the output"}


def get_model(kind: str, cfg: dict, cache: Path, retrain: bool) -> tuple[rv.ReverseModel, dict]:
    """Load ``cache/KIND.safetensors`` when its configs match, else train and save it."""
    model_cfg, train_cfg = cfg[kind]
    path = cache / f"{kind}.safetensors"
    want = {"task": asdict(cfg["task"]), "model": asdict(model_cfg), "train": asdict(train_cfg)}
    if path.is_file() and not retrain:
        model, meta = rv.load_reversal(path)
        if all(meta.get(k) == v for k, v in want.items()):
            print(f"{kind}: loaded {path} (held-out exact match {meta['accuracy']:.4f})")
            return model, meta
        print(f"{kind}: {path} was trained with other settings; retraining")
    model = rv.build_model(cfg["task"], model_cfg, seed=train_cfg.seed)
    report = rv.train_reversal(model, train_cfg)
    rv.save_reversal(path, model, train_cfg, report)
    print(f"{kind}: trained in {report.seconds:.0f} s, held-out exact match {report.accuracy:.4f} -> {path}")
    return rv.load_reversal(path)


def ci(v: tuple[float, float, float]) -> str:
    return format_ci(*v, digits=2)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def truth_table(results: dict[str, rx.Experiment], metas: dict[str, dict]) -> str:
    rows = []
    for kind, exp in results.items():
        s = rx.truth_summary(exp)
        rows.append([
            kind, f"{metas[kind]['accuracy']:.4f}", ci(s["source_top"]), ci(s["source_share"]), ci(s["self_share"]),
            ci(s["set_size"]), ci(s["set_is_source_and_self"]), ci(s["swap_source"]), ci(s["swap_self"]),
            ci(s["swap_emitted"]), ci(s["swap_pending"]),
        ])
    return table(
        ["model", "held-out exact match", "source has the top Jacobian", "source's Jacobian share",
         "token t's share", "truth-set size", "set = {n−1−t, t}", "swap source flips", "swap token t flips",
         "swap an emitted source flips", "swap a pending source flips"], rows)


def method_table(results: dict[str, rx.Experiment]) -> str:
    rows = []
    for kind, exp in results.items():
        for r in rx.summarize(exp):
            key = r["method"] if r["feature"] == "logit" else f"{r['method']}@layer{r['feature'].split()[-1]}"
            conv = "" if r["converged"] is None else f"{r['converged']:.2f}"
            rows.append([
                kind, LABELS[r["method"]], r["feature"], ci(r["diag"]), ci(r["rank"]), ci(r["set_hit"]), ci(r["mass"]),
                ci(r["spread"]), ci(r["source_zero"]), conv, f"{exp.seconds[key]:.0f}",
            ])
    return table(
        ["model", "method", "feature", "source ranked first", "mean rank of source", "top-k = Jacobian set",
         "mass on the set", "log-spread of source across t", "source scored 0", "converged", "time (s)"], rows)


def correct_line(results: dict[str, rx.Experiment]) -> str:
    parts = [f"{k} {np.nanmean(e.correct):.4f}" for k, e in results.items()]
    return "Share of the explained steps whose emitted token is the right one: " + ", ".join(parts)


def describe(meta: dict) -> str:
    m, t = meta["model"], meta["train"]
    sizes = (f"embedding {m['dim']}, LSTM state {m['hidden']}" if m["kind"] == "lstm"
             else f"{m['layers']} layers, width {m['dim']}, {m['heads']} heads, feed-forward {m['hidden']}")
    return (f"{m['kind']}: {sizes}; {t['steps']} Adam steps of {t['batch_size']} fresh sequences in "
            f"{meta['train_seconds']:.0f} s; exact match {meta['accuracy']:.4f} on {t['eval_size']} held-out sequences")


def heatmaps(results: dict[str, rx.Experiment], out: Path, length: int) -> list[Path]:
    """One figure per method: mean share of each input position (columns) in each step's
    scores (rows), over the sequences of length ``length``; dots mark the source n−1−t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for kind, exp in results.items():
        sel = exp.lengths == length
        for m, s in exp.scores.items():
            panels.setdefault(m, []).append((f"{kind}, logit", s[sel], exp.lengths[sel]))
        for (m, l), s in exp.layer_scores.items():
            panels.setdefault(m, []).append((f"{kind}, hidden after layer {l}", s[sel], exp.lengths[sel]))
        panels.setdefault("jacobian", []).append((f"{kind}, logit", exp.jacobian[sel], exp.lengths[sel]))
        for l, j in exp.layer_jacobian.items():
            panels["jacobian"].append((f"{kind}, hidden after layer {l}", j[sel], exp.lengths[sel]))
        if exp.counterfactual is not None:
            panels.setdefault("token_swap", []).append((f"{kind}, emitted token", exp.counterfactual[sel], exp.lengths[sel]))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for method, items in panels.items():
        fig, axes = plt.subplots(1, len(items), figsize=(3.6 * len(items), 3.4), squeeze=False)
        for ax, (title, s, _) in zip(axes[0], items):
            with np.errstate(invalid="ignore"):
                share = s / np.nansum(s, axis=-1, keepdims=True) if method != "token_swap" else s
            im = ax.imshow(np.nanmean(share, axis=0) if len(share) else np.zeros((length, length)),
                           cmap="viridis", vmin=0, aspect="equal")
            ax.scatter(length - 1 - np.arange(length), np.arange(length), s=6, c="white")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("input position")
            ax.set_ylabel("output step t")
            fig.colorbar(im, ax=ax, fraction=0.046)
        label = LABELS.get(method) or EXTRA_LABELS[method]
        fig.suptitle(f"{label}: share per input (n = {length}; dots: source n−1−t)", fontsize=10)
        fig.tight_layout()
        path = out / f"{method}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def update_findings(path: Path, block: str) -> None:
    """Replace the marked block of ``path`` (or append it; create the file if needed)."""
    block = f"{BEGIN}\n{block.rstrip()}\n{END}"
    text = path.read_text() if path.is_file() else "# Findings\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="out/reverse", help="checkpoints, figures and raw results (default: out/reverse)")
    parser.add_argument("--quick", action="store_true", help="small task, models and run (about a minute)")
    parser.add_argument("--sequences", type=int, default=None, help="sequences explained per model (full: 200)")
    parser.add_argument("--max-steps", type=int, default=None, help="EntropyAttribution max_steps (full: 100)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these tiny models)")
    parser.add_argument("--retrain", action="store_true", help="train even when a matching checkpoint exists")
    parser.add_argument("--findings", default=None,
                        help="markdown file to update (full: docs/reversal.md; quick: CACHE/quick/findings.md)")
    args = parser.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    for name, value in (("sequences", args.sequences), ("max_steps", args.max_steps)):
        if value is not None:
            if value < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1")
            cfg[name] = value
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    cache = Path(args.cache) / ("quick" if args.quick else "")
    findings = Path(args.findings) if args.findings else (cache / "findings.md" if args.quick else Path("docs/reversal.md"))
    start = time.perf_counter()

    metas, results = {}, {}
    batch = rv.make_batch(cfg["sequences"], cfg["task"], seed=2024)
    for kind in ("lstm", "transformer"):
        model, metas[kind] = get_model(kind, cfg, cache, args.retrain)
        layers = tuple(range(1, len(model.layers) + 1)) if kind == "transformer" else ()
        t0 = time.perf_counter()
        results[kind] = rx.run_experiment(model, batch, layers=layers, layer_methods=tuple(rx.ENTROPY_VARIANTS),
                                          max_steps=cfg["max_steps"], work=cache / "steps" / kind)
        print(f"{kind}: explained {cfg['sequences']} sequences in {time.perf_counter() - t0:.0f} s")

    truth = truth_table(results, metas)
    methods = method_table(results)
    print("\nWhat each output step reads (mean [95 % bootstrap CI] over sequences)\n" + truth)
    print("\n" + correct_line(results))
    print("\nMethods vs the known answer\n" + methods)
    figures = heatmaps(results, cache / "figures", cfg["task"].max_len)
    total = time.perf_counter() - start
    command = shlex.join(["python", "benchmarks/reverse_task.py", *sys.argv[1:]])
    summary = {
        "command": command, "seconds": total,
        "config": {"task": asdict(cfg["task"]), "sequences": cfg["sequences"], "max_steps": cfg["max_steps"]},
        "models": metas, "rows": {k: rx.summarize(e) for k, e in results.items()},
        "truth": {k: rx.truth_summary(e) for k, e in results.items()}, "settings": results["lstm"].settings,
    }
    write_json(cache / "summary.json", summary, default=str)

    task = cfg["task"]
    task, settings = cfg["task"], results["lstm"].settings
    block = f"""## Reversal benchmark: measured tables

Produced by `{command}` ({total / 60:.1f} min in all, {platform.machine()} CPU, {args.threads} torch
thread(s), torch {torch.__version__}); checkpoints, raw summary and figures under
`{cache.as_posix()}/` (`figures/*.png`: one timestamps × input positions heatmap per method).

- Task: {task.n_symbols} symbols, lengths {task.min_len}–{task.max_len}; {cfg['sequences']} held-out sequences
  explained per model (seed 2024). Intervals: 95 % percentile bootstrap over sequences.
- Models ({correct_line(results).lower()}):
  - {describe(metas['lstm'])};
  - {describe(metas['transformer'])}.
- EntropyAttribution: `max_steps={cfg['max_steps']}`, σ_S from `FeatureStats` pooled over all steps;
  "defaults" = the tolerance objective (newton update), "adam" = the authors' penalised objective
  (`entropy_weight=0.1`) solved by `update="adam"`. LayerIntegratedGradients:
  all-PAD baseline, {settings['ig_steps']} steps. Ground-truth set: positions whose Jacobian norm
  is ≥ {settings['truth_rel']} × the step's largest. Token swaps: {settings['n_swaps']} per position.

### What each output step reads

{truth}

### Methods against the known answer

{methods}
"""
    update_findings(findings, block)
    print(f"\nfigures: {', '.join(p.as_posix() for p in figures)}\nfindings: {findings}\ntotal {total / 60:.1f} min")


if __name__ == "__main__":
    main()
