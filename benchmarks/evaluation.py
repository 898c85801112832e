"""Head to head on the zoo models: faithfulness of EntropyAttribution against Captum's methods
(writes docs/evaluation.md and its figures).

    python benchmarks/evaluation.py [--models cnn,lstm,transformer] [--sentences 500] [--minilm-sentences 0]

Held-out sentences: the polarity corpus's test split, then its dev split (800 in all; neither is
trained on). Every method explains each sentence's predicted class (`captum_entropy.evaluate`,
default settings; σ_S fitted on 256 training sentences per model); words are removed three ways.
Chunks of sentences are saved under --work as JSON (resumable: a chunk on disk is not
recomputed); then the tables, the paired tests and the figures are written.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from captum_entropy.evaluate import REMOVALS, Evaluation, evaluate
from captum_entropy.evaluate.coherency import coherency_summary, layer_coherency
from captum_entropy.evaluate.faithfulness import METRICS
from captum_entropy.evaluate.statistics import bootstrap_ci
from captum_entropy.viz import save_figure, write_text
from captum_entropy.zoo import load, load_polarity
from common import chunk_path, covering, format_ci
from evaluation_tables import METHODS, cancellation_section, departures, embedding_width, single_word_verdicts

VERDICT = [  # what the tables of the published run say (read from them; rerun and re-read after a change)
    "## What it says", "",
    "- **Where faithfulness is measured by removing sets of words, EntropyAttribution loses to every signed "
    "method** (InputXGradient, LayerIntegratedGradients, DeepLift, GradientShap, FeatureAblation, Occlusion, "
    "KernelShap, Lime) on all three models and every way of removing words: 10 to 13 of the 13 metrics go "
    "against it in each comparison, **the magnitude versions included, in probability (`*_abs`) and in "
    "log-odds (`*_logodds`)**.",
    "- **Why, on the CNN and the LSTM: its top words push the prediction both ways.** Measured from each "
    "word's leave-one-out effect (the table \"Do the top words push the same way?\" under each model): the "
    "words EntropyAttribution ranks in its top 10–50 % hold about as much of the sentence's single-word "
    "effect, whichever way it pushes, as the signed methods' top words (share 0.58 against 0.58–0.63), but a "
    "third of it cancels (cancellation 0.40 on the CNN, 0.33 on the LSTM, against 0.08–0.11 and 0.01–0.04 "
    "for the signed methods and 0.43–0.44 for random words). A set-removal metric sees the sum of the removed "
    "words' effects, so a ranking by how much each word matters, whichever way, scores low there even in "
    "log-odds: that is what these metrics measure, not a sign that the words do not matter. **On the "
    "Transformer it is not only that**: cancellation is close to the signed methods' (0.20 against "
    "0.15–0.17), and its top words hold less of the single-word effect (0.45 against 0.52–0.56): there it "
    "finds the words that matter less well.",
    "- **The one-word-at-a-time question** (Kendall τ against the size of each word's leave-one-out effect) is "
    "where it beats the signed methods: in probability and in log-odds (`loo_tau_abs`, `loo_tau_logodds`) "
    "against all eight on the CNN and the LSTM when words are deleted or replaced by noise. When they are "
    "masked it loses the probability τ to all eight on the CNN (in log-odds: five ties, three losses) and "
    "on the LSTM ties all eight in probability and wins against three in log-odds. On the Transformer it "
    "ties all eight when words are deleted, wins the log-odds τ against all eight under noise (in "
    "probability: three ties, five losses), and loses both to all eight when they are masked (the table "
    "under each model).",
    "- **Against Saliency and its own linearised answer** (`entropy_linearized`, the σ of a feature linear in the "
    "noise: on the CNN and the LSTM it orders words exactly as Saliency does, by gradient norm) it does not win a "
    "single metric: it loses 12–13 of 13 on the CNN and on the Transformer, and 7–11 on the LSTM (the rest "
    "ties). Its σ departs from the linearised σ by 0.27, 0.18 and 0.19 nats per dimension in the median "
    "sentence (CNN, LSTM, Transformer; its spread over a sentence's words, the part that can reorder them: "
    "0.31, 0.20 and 0.14), and **where it departs most** (the third of sentences with the lowest τ between the two "
    "rankings) the linearised ranking is the more faithful one: on the CNN and the Transformer on all twelve "
    "metrics (p ≤ 4e-6 and ≤ 0.02), on the LSTM on eight (the log-odds comprehensiveness and deletion, the "
    "magnitude deletion and the signed τ tie; uncorrected p < 0.05); never the other way. On these models the "
    "departures from the linear answer do not make the prediction's explanation more faithful.",
    "- Against its own reading of the last hidden layer (`entropy_layer`) it wins 8–9 of 13 on the LSTM (at "
    "most 3 losses), wins 6–8 and ties the rest on the Transformer when words are deleted or noised (ties "
    "12, loses 1 when masked), and loses more than it wins on the CNN (5–7 losses, 0–3 wins).",
    "- Against the random baseline it wins all 13 metrics on the CNN, 11–13 on the LSTM and 10–12 on the "
    "Transformer when words are masked or noised; **on the Transformer with words deleted it loses the three "
    "deletion AOPCs to random** (signed, magnitude and log-odds; 5 wins, 5 ties).",
    "- **Where the answer is known, it is exact on what it measures**: words a model provably ignores get exactly "
    "nothing on all three word models (as with the gradient methods, up to ties), while on the linear model it "
    "cannot rank words at all (every word has the same Jacobian, so on 8 of the 30 sentences every word gets "
    "the same σ and on the rest only sampling noise separates them) and the signed methods recover the exact "
    "contributions.",
    "- **Layer coherency**: its word rankings change least from one Transformer layer to the next (τ 0.53 "
    "against 0.23 and 0.36).",
    "- **Cost**: it is by far the slowest method: 837–1423 s for 500 sentences against 3–6 s for "
    "LayerIntegratedGradients (the wall-time lines; two of the CNN's ten chunks ran beside another job, so its "
    "total is an upper bound).",
    "- **So, model by model**: on these three small models, to find the words whose removal moves the "
    "prediction, use a signed method; EntropyAttribution's prediction-level ranking answers a different "
    "question (how much the prediction depends on each word, whichever way) and answers it best one word at a "
    "time on the CNN and the LSTM, but no better than Saliency, its own first-order form, which costs one "
    "backward pass. What it gives that they do not is a reading of every layer in one unit (nats of each "
    "word kept), whose word rankings were the most stable from layer to layer on the Transformer.",
    "- MiniLM is not in this run: its predicted logit costs minutes a sentence on this CPU (docs/findings.md), "
    "about a day for 500 sentences, and is not yet determined across seeds (docs/performance.md, the sampling "
    "floor); it needs a GPU (`--models cnn,lstm,transformer,minilm --minilm-sentences 500` resumes this run "
    "and adds it).", ""]


def held_out(n: int) -> list[str]:
    texts = [e.text for e in load_polarity("test")] + [e.text for e in load_polarity("dev")]
    if n > len(texts):
        raise SystemExit(f"--sentences {n}: the corpus holds {len(texts)} held-out sentences")
    return texts[:n]


def run(models: dict[str, int], texts: list[str], work: Path, chunk: int, methods, coherency_n: int) -> None:
    for name, count in models.items():
        zm = None
        for i in range(0, count, chunk):
            path = chunk_path(work, name, i, min(i + chunk, count), ".json")
            if path.is_file():
                continue
            zm = zm or load(name)
            t = time.perf_counter()
            ev = evaluate(zm, texts[i:min(i + chunk, count)], methods=list(methods), progress=False)
            for r in ev.rows:
                r["sentence"] += i
            ev.save(str(path))
            print(f"{name} {i}..{min(i + chunk, count)}: {time.perf_counter() - t:.0f} s", flush=True)
        rescore_chunks(name, zm, texts, work, count, chunk)
        path = work / f"{name}-coherency-{min(coherency_n, count):04d}.csv"
        if len(load(name).layers) > 1 and not path.is_file() and coherency_n:
            df = layer_coherency(zm or load(name), texts[:min(coherency_n, count)])
            write_text(path, df.to_csv(index=False))


def rescore_chunks(name: str, zm, texts: list[str], work: Path, count: int, chunk: int) -> None:
    """Chunks saved before a metric existed get it from their stored word scores
    (``Evaluation.rescore``: perturbations only, no attribution computed again; the metrics
    they had are checked to come out the same)."""
    for i in range(0, count, chunk):
        path = chunk_path(work, name, i, min(i + chunk, count), ".json")
        ev = Evaluation.load(str(path))
        if all(m in r for r in ev.rows for m in METRICS):
            continue
        zm = zm or load(name)
        t = time.perf_counter()
        ev.rescore(zm, texts[i:min(i + chunk, count)], first_sentence=i).save(str(path))
        print(f"{name} {i}..{min(i + chunk, count)}: rescored in {time.perf_counter() - t:.0f} s", flush=True)


KNOWN_METHODS = ("entropy", "entropy_linearized", "entropy_layer", "saliency", "input_x_gradient", "layer_ig", "deeplift", "gradient_shap",
                 "feature_ablation", "kernel_shap", "random")


def run_known(models: list[str], texts: list[str], work: Path, methods=KNOWN_METHODS) -> None:
    """The ground-truth models: each word model ignoring half its vocabulary, and the linear model."""
    from captum_entropy.evaluate.known import ignoring_model, known_answers, linear_model

    for name in [m for m in models if m != "minilm"] + ["linear"]:
        path = work / f"known-{name}-{len(texts):04d}.csv"
        if path.is_file():
            continue
        t = time.perf_counter()
        if name == "linear":
            df = known_answers(linear_model(), texts, [m for m in methods if m != "entropy_layer"])
        else:
            zm, ignored = ignoring_model(name)
            df = known_answers(zm, texts, list(methods), ignored=ignored)
        write_text(path, df.to_csv(index=False))
        print(f"known answers {name}: {time.perf_counter() - t:.0f} s", flush=True)


def known_section(work: Path) -> list[str]:
    import pandas as pd

    files = sorted(work.glob("known-*.csv"))
    if not files:
        return []
    lines = ["## Where the right answer is known", "",
             "Each trained word model made to **provably ignore** a seeded half of its vocabulary (its embedding is "
             "multiplied by 0 after the point where the methods put noise or take gradients: "
             "`captum_entropy.evaluate.known.ignoring_model`): `read_auc` = P(a read word's |score| > an ignored "
             "word's), 1 = perfect, 0.5 = chance; `ignored_share` = share of the |score| mass on ignored words, "
             "0 = perfect. A bag-of-embeddings logistic model (`linear_model`), where a word's exact contribution "
             "to the predicted logit is w·e/n: Spearman ρ with it (`rho_signed`) and with its absolute value "
             "(`rho_abs`). Means with 95 % bootstrap intervals over sentences.", ""]
    for path in files:
        df = pd.read_csv(path)
        name, n = path.stem.split("-")[1], int(path.stem.split("-")[-1])
        metrics = [c for c in ("read_auc", "ignored_share", "rho_signed", "rho_abs") if c in df.columns]
        lines += [f"**{name}** (n = {n} sentences)", "", "| method | " + " | ".join(metrics) + " |",
                  "|---" * (len(metrics) + 1) + "|"]
        for method, g in df.groupby("method", sort=False):
            cells = []
            for m in metrics:
                v = g[m].to_numpy(dtype=float)
                v = v[np.isfinite(v)]
                cells.append(format_ci(*bootstrap_ci(v)) + ("" if len(v) == len(g) else f" (n = {len(v)})")
                             if len(v) else "undefined (every word the same score)")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def gather(work: Path, name: str) -> Evaluation | None:
    chunks = [Evaluation.load(str(p)) for p in covering(work, name, ".json")]
    return Evaluation.combine(chunks) if chunks else None


def summarise(models: dict[str, int], work: Path, doc: Path, figs: Path, command: str) -> None:
    lines = ["# Head to head: how faithful is each attribution method?", "",
             f"Produced by `{command}` (`benchmarks/evaluation.py`; chunks under `out/evaluation`).", "",
             "Every method explains the **predicted class** of each held-out sentence (polarity test split, then "
             "dev split; neither is trained on) with default settings: EntropyAttribution at the predicted logit "
             "(`entropy`; since 0.2 the default there draws antithetic pairs, stops at a median standard error of "
             "0.05 in log σ and checks its answer for other optima), its linearised closed form there (`entropy_linearized`: one backward pass, the σ of a "
             "feature linear in the noise) and at the last hidden layer (`entropy_layer`, σ_S fitted on 256 training "
             "sentences per model and layer), Captum's Saliency (gradient norm), InputXGradient, LayerIntegratedGradients (32 "
             "steps), DeepLift, GradientShap (16 samples) on the embedding layer with an all-padding baseline, "
             "FeatureAblation and Occlusion (a word's ids → padding), KernelShap and Lime (64 samples, words on "
             "and off), and a seeded random baseline. Word scores: EntropyAttribution's are the mean of its kept "
             "information over a word's tokens (a word a sub-word tokenizer cuts in two is not ranked above a "
             "one-piece word of the same σ); the additive methods' (InputXGradient, LayerIntegratedGradients, "
             "DeepLift, GradientShap, Occlusion) and Saliency's are sums over the word's tokens; FeatureAblation, "
             "KernelShap, Lime and random give one value per word. The three word models have one token per word, so "
             "the choice changes no number on this page. Metrics "
             "(`captum_entropy/evaluate/faithfulness.py`): deletion / insertion AOPC over 10 % steps, ERASER "
             "comprehensiveness and sufficiency over the top 1/5/10/20/50 %, Kendall τ against leave-one-out "
             "(`loo_tau`; `loo_tau_abs` against its absolute value: EntropyAttribution and Saliency score how much "
             "the prediction depends on a word, whichever way the word pushes, while every other metric counts a "
             "word that pushes against the predicted class as a mistake), and magnitude versions of deletion, "
             "comprehensiveness and sufficiency (`*_abs`: the same removals scored by |p0 − p|, how far the "
             "prediction moves whichever way: the unsigned methods' own question in the signed metrics' units), "
             "and the same four in **log-odds** of the predicted class (`*_logodds`: |lo0 − lo| with "
             "lo = log p − log(1 − p), from the logits; `loo_tau_logodds` against |Δ log-odds| of each word's "
             "removal). The log-odds versions are the fair magnitude question for an unsigned method: a "
             "confident probability can fall far but rise little, so |p0 − p| still credits the words that push "
             "towards the class more than the same evidence pushing against it, while the log-odds move by the "
             "same amount either way (in a logistic model, by the word's weight), and a logit is the feature "
             "EntropyAttribution explains by default. "
             "Words are removed three ways: **delete** (cut out), **mask** ([MASK], else padding), **noise** "
             "(embeddings replaced by Gaussian draws with the per-dimension mean and std of the embeddings of the "
             "chunk of 50 sentences evaluated together). Intervals: "
             "95 % bootstrap over sentences; tests: paired Wilcoxon over sentences, Holm-corrected over the "
             f"{len(METHODS) - 1} comparisons of `entropy` with the others in each (model, removal, metric).", ""]
    lines += VERDICT
    figure_rows = []
    for name in models:
        ev = gather(work, name)
        if ev is None:
            continue
        n = len({r["sentence"] for r in ev.rows})
        secs = {}
        for part in ev.meta.get("parts", []):
            for m, v in part.get("seconds", {}).get(name, {}).items():
                secs[m] = secs.get(m, 0.0) + v
        lines += [f"## {name} (n = {n} sentences)", ""]
        lines += [ev.to_markdown()]
        wtl = ev.win_tie_loss("entropy")
        lines += [f"EntropyAttribution (`entropy`) against each method, per removal: win / tie / loss over the "
                  f"{len(METRICS)} metrics (Holm-corrected α = 0.05; entropy's win = entropy more faithful).", "",
                  "| against | " + " | ".join(REMOVALS) + " |", "|---" * (len(REMOVALS) + 1) + "|"]
        for other in [m for m in METHODS if m != "entropy"]:
            cells = []
            for removal in REMOVALS:
                g = wtl[(wtl.other == other) & (wtl.removal == removal)]
                cells.append("/".join(str(int((g.verdict == v).sum())) for v in ("win", "tie", "loss")))
            lines.append(f"| {other} | " + " | ".join(cells) + " |")
        lines += [""] + single_word_verdicts(wtl)
        lines += cancellation_section(ev)
        lines += ["Where EntropyAttribution departs from Saliency:", ""] + departures(ev, "saliency")
        lines += ["Where EntropyAttribution departs from its linearised answer (`entropy_linearized`):", ""]
        lines += departures(ev, "entropy_linearized", width=embedding_width(load(name, progress=False)))
        lines += ["Wall time of the word scores on this 2-core CPU (all sentences, s): "
                  + ", ".join(f"{m} {v:.0f}" for m, v in sorted(secs.items(), key=lambda kv: -kv[1])), ""]
        coh = sorted(work.glob(f"{name}-coherency-*.csv"))
        if coh:
            import pandas as pd

            summary = coherency_summary(pd.read_csv(coh[-1]))
            lines += [f"Layer coherency (Kendall τ of word rankings between consecutive layers, {coh[-1].stem.split('-')[-1].lstrip('0')} sentences):", "",
                      "| method | layer pair | τ [95 % interval] |", "|---|---|---|"]
            lines += [f"| {r.method} | {r.pair} | {format_ci(r.tau, r.lo, r.hi, 2)} |" for r in summary.itertuples()]
            lines.append("")
        figure_rows.append((name, ev))
    lines += known_section(work)
    if figure_rows:
        for name, ev in figure_rows:
            for kind in ("deletion", "deletion_magnitude", "deletion_logodds"):
                path = figs / f"evaluation_{name}_{kind}.png"
                save_figure(ev.plot(kind, model=name, removal="delete"), path)
                lines += [f"![{name}: {kind.replace('_', ' ')} curves](figures/{path.name})", ""]
    write_text(doc, "\n".join(lines).rstrip() + "\n")
    print(f"wrote {doc}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cnn,lstm,transformer")
    p.add_argument("--sentences", type=int, default=500)
    p.add_argument("--minilm-sentences", type=int, default=0, help="minilm's logit costs ~2 min a sentence on a CPU")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--coherency-sentences", type=int, default=100)
    p.add_argument("--known-sentences", type=int, default=100, help="sentences for the ground-truth models")
    p.add_argument("--known-methods", default=",".join(KNOWN_METHODS))
    p.add_argument("--model-sentences", action="append", metavar="MODEL=N",
                   help="another count for one model (repeatable), e.g. transformer=200")
    p.add_argument("--work", default="out/evaluation")
    p.add_argument("--doc", default="docs/evaluation.md")
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    models = {m: (args.minilm_sentences if m == "minilm" else args.sentences) for m in names}
    for spec in args.model_sentences or []:
        name, _, n = spec.partition("=")
        if name not in models or not n.isdigit():
            raise SystemExit(f"--model-sentences {spec!r}: use MODEL=N for a model in --models")
        models[name] = int(n)
    texts = held_out(max(models.values()))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        run(models, texts, work, args.chunk, args.methods.split(","), args.coherency_sentences)
        if args.known_sentences:
            run_known(names, texts[: args.known_sentences], work, args.known_methods.split(","))
    command = "python benchmarks/evaluation.py" + "".join(
        f" --{k.replace('_', '-')} {getattr(args, k)}" for k in ("models", "sentences", "minilm_sentences",
                                                               "coherency_sentences", "known_sentences", "known_methods")
        if getattr(args, k) != p.get_default(k)) + "".join(f" --model-sentences {m}" for m in args.model_sentences or [])
    summarise(models, work, Path(args.doc), Path(args.doc).parent / "figures", command)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
