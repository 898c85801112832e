"""The paper's findings, measured on the four zoo models (writes docs/findings.md and its figures).

    python benchmarks/paper_findings.py [--sentences 200] [--output-sentences 200] [--minilm-sentences 48] [--minilm-output-sentences 8]

Stage 1 explains held-out polarity test sentences with every zoo model at every hidden layer and
at the predicted logit (``captum_entropy.Explainer``, default settings, σ_S fitted on 256 training
sentences per model and layer) and saves each chunk of sentences under ``--work`` (resumable: a
chunk on disk is not recomputed). The chunks are small safetensors files (σ, its standard errors
and the flags per sentence) committed under benchmarks/results/findings, so a later session, or a
machine with a GPU, extends the run where this one stopped. Stage 2 computes each claim per sentence, a 95 % bootstrap
interval over sentences (scipy, seeded), and writes the tables and figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from captum_entropy import Explainer, LayerExplanation
from captum_entropy.viz import save_figure, write_text
from captum_entropy.zoo import load, load_polarity
import findings_tables as T
from common import chunk_path, covering, missing_chunks

MODELS = ("minilm", "transformer", "lstm", "cnn")


# -- stage 1 -------------------------------------------------------------------------------------

def run(models, texts, n_layers: dict[str, int], n_output: dict[str, int], work: Path, chunk: int, max_steps: int, timing: dict,
        parts: tuple[str, ...] = ("layers", "output"), reverse: bool = False, device: str = "cpu") -> None:
    """Explain and save every chunk not yet on disk (every model's layers first, then the
    predictions, the slow part); ``timing`` gets each chunk's seconds."""
    explainers = {}
    for part in parts:
        for name in models:
            if name not in explainers:
                zm = load(name)
                zm.model.to(device)
                hidden = Explainer(zm, output=False, max_steps=max_steps)
                explainers[name] = {"layers": hidden,
                                    "output": Explainer(zm, layers=(), max_steps=max_steps, feature_std=hidden.feature_std)}
            count = n_layers[name] if part == "layers" else n_output[name]
            todo = missing_chunks(work, f"{name}-{part}", ".safetensors", count, chunk)
            for i, end in (reversed(todo) if reverse else todo):
                path = chunk_path(work, f"{name}-{part}", i, end, ".safetensors")
                if path.is_file():  # another process on the same folder made it meanwhile
                    continue
                t = time.perf_counter()
                explainers[name][part](texts[i:end]).save(path)  # atomic (safetensors + rename)
                key = path.name if device == "cpu" else f"{path.name}@{device}"  # the page sums CPU time apart
                timing[key] = round(time.perf_counter() - t, 1)
                on_disk = json.loads((work / "timing.json").read_text()) if (work / "timing.json").is_file() else {}
                write_text(work / "timing.json", json.dumps({**on_disk, **timing}, indent=1, sort_keys=True))  # another run may share the folder
                print(f"{name} {part} {i}..{end}: {timing[key]:.0f} s", flush=True)


def gather(work: Path, name: str, part: str) -> list[LayerExplanation]:
    """The chunks that cover sentences 0, 1, … without gap or overlap (the longest at each start)."""
    return [LayerExplanation.load(p) for p in covering(work, f"{name}-{part}", ".safetensors")]


# -- stage 2 -------------------------------------------------------------------------------------

def task_features(models, data):
    """``(model, "output" | "last layer", its explanations, the feature's index)`` for every model."""
    for name in models:
        for label, exs in (("output", data[name]["output"]), ("last layer", data[name]["layers"])):
            yield name, label, exs, len(exs[0].features) - 1


def vs_minilm(models):
    """``(label, other model)`` for every paired comparison with minilm (the paper's BERT)."""
    return [(lb, m) for lb in ("output", "last layer") for m in models if m != "minilm"] if "minilm" in models else []


def depth_section(models, data, fig_dir: Path) -> tuple[list[str], list[str]]:
    """Claim 1: corpus-level entropy against depth, with its figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
    table = ["| model | feature (relative depth) | mean word entropy per dimension, nats [95 % CI] | of which the "
             "per-word errors alone | n | converged |", "|---|---|---|---|---|---|"]
    rises = []
    for name in models:
        layers, outs = data[name]["layers"], data[name]["output"]
        n_hidden = len(layers[0].features)
        names, depth = layers[0].features + ["output"], layers[0].depth + [outs[0].depth[0]]
        rows = [T.gather_readings(layers, f, f"{name}/{names[f]}/depth") for f in range(n_hidden)]
        rows.append(T.gather_readings(outs, 0, f"{name}/output/depth"))
        ent = [T.per_sentence(r, T.mean_entropy) for r in rows]
        conv = [float(torch.cat([e.converged[f] for e in layers]).float().mean()) for f in range(n_hidden)]
        conv += [float(torch.cat([e.converged[0] for e in outs]).float().mean())]
        cis = [T.interval(e) for e in ent]
        for n_, d, c, cv in zip(names, depth, cis, conv):
            table.append(f"| {name} | {n_} ({d:.2f}) | {T.fmt(c)} | ± {np.diff(c.errors)[0] / 2:.4f} | {c.n} | {cv:.0%} |")
        mean, lo, hi = (np.array([getattr(c, k) for c in cis]) for k in ("mean", "low", "high"))
        line = ax.errorbar(depth[:-1], mean[:-1], yerr=[mean[:-1] - lo[:-1], hi[:-1] - mean[:-1]], marker="o", capsize=3,
                           label=f"{name} (n = {cis[0].n}; prediction {cis[-1].n})")
        colour = line[0].get_color()
        ax.errorbar(depth[-1:], mean[-1:], yerr=[mean[-1:] - lo[-1:], hi[-1:] - mean[-1:]], marker="D", capsize=3, color=colour)
        ax.plot(depth[-2:], mean[-2:], ls=":", color=colour)
        ax.errorbar(depth, mean, yerr=[[c.mean - c.errors[0] for c in cis], [c.errors[1] - c.mean for c in cis]],
                    fmt="none", lw=6, alpha=0.35, color=colour)
        half = [float(np.median([v[0] for v in T.order_measures(e, f)["half_width"].values()]))
                for e, f in [(layers, f) for f in range(n_hidden)] + [(outs, 0)]]
        contrast = [float(np.median([v[0] for v in T.per_sentence(rr, T.spread).values()])) for rr in rows]
        ax2.plot(depth, half, marker="o", color=colour, label=f"{name}: a word's 95 % half-width")
        ax2.plot(depth, contrast, marker="s", ls="--", color=colour, alpha=0.6, label=f"{name}: spread of words (std of log σ)")
        pairs = [(f"{names[n_hidden - 1]} → output (first {len(ent[-1])})", ent[n_hidden - 1], ent[-1])]
        if n_hidden > 1:
            pairs.insert(0, (f"{names[0]} → {names[n_hidden - 1]}", ent[0], ent[n_hidden - 1]))
        for what, a, b in pairs:
            d = T.paired(b, a)
            diff = {k: b[k] - a[k] for k in sorted(set(a) & set(b))}
            rose = np.mean([v[0] > 0 for v in diff.values()])
            beyond = np.mean([v[0] > T.Z95 * v[1:].std() for v in diff.values()])
            rises.append(f"| {name} | {what} | {T.fmt(d)} | {rose:.0%} | {beyond:.0%} | "
                         f"{T.verdict(d, 'rose (information lost)', 'fell')} |")
    ax.set_xlim(0, 1.32)
    ticks = ([0, 0.25, 0.5, 0.75, 1.0, 1.25], ["0", "0.25", "0.5", "0.75", "1\n(last layer)", "prediction"])
    ax.set_xticks(*ticks)
    ax2.set_xticks(*ticks)
    ax.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    ax.set_xlabel("relative depth (layer / number of layers); the prediction (a logit, not a layer) on the right")
    ax.set_ylabel("mean word entropy per dimension (nats)")
    ax.set_title("Corpus-level entropy against depth (higher = more forgotten)\n"
                 "thin bars: 95 % CI over sentences; thick: the part the per-word errors alone make", fontsize=9)
    ax.legend(fontsize=8)
    ax2.set_xlabel("relative depth")
    ax2.set_ylabel("nats/dim (median over sentences)")
    ax2.set_title("A word's 95 % half-width against the spread of the words\n"
                  "(two words are ordered when their gap exceeds ~1.4 half-widths)", fontsize=9)
    ax2.legend(fontsize=6.5)
    fig.tight_layout()
    save_figure(fig, fig_dir / "findings_depth.png")
    return table, rises


def words_section(models, data, sentiment: set[str], function: set[str]) -> tuple[list[str], list[str], list[str]]:
    """Claim 2: how much more the sentiment (function) words are kept than the sentence's mean word."""
    table = ["| model | feature | sentiment words: contrast, nats/dim [95 % CI] | n | their fraction of words | "
             "function words: contrast [95 % CI] | n | their fraction of words | sentiment − function in the same "
             "sentence [95 % CI] | n |", "|---|---|---|---|---|---|---|---|---|---|"]
    got = {}
    for name, label, exs, f in task_features(models, data):
        rows = T.gather_readings(exs, f, f"{name}/{label}/words")
        s = T.per_sentence(rows, lambda r: T.contrast_on(r, sentiment))
        fn = T.per_sentence(rows, lambda r: T.contrast_on(r, function))
        got[(name, label)] = (s, fn)
        cs, cf, both = T.interval(s), T.interval(fn), T.paired(s, fn)
        table.append(f"| {name} | {label} | {T.fmt(cs)} | {cs.n} | {np.mean([T.fraction_on(rows[k], sentiment) for k in s]):.3f} "
                     f"| {T.fmt(cf)} | {cf.n} | {np.mean([T.fraction_on(rows[k], function) for k in fn]):.3f} | "
                     f"{T.fmt(both)} | {both.n} |")
    paired = ["| feature | minilm − other: sentiment-word contrast [95 % CI] | function-word contrast [95 % CI] | n (paired) |",
              "|---|---|---|---|"]
    verdicts = []
    for label, other in vs_minilm(models):
        ds = T.paired(got[("minilm", label)][0], got[(other, label)][0])
        df = T.paired(got[("minilm", label)][1], got[(other, label)][1])
        paired.append(f"| {label}: minilm − {other} | {T.fmt(ds)} | {T.fmt(df)} | {ds.n} |")
        verdicts.append(f"- {label}, minilm against {other}: sentiment words "
                        f"{T.verdict(ds, 'stand out more in minilm', f'stand out more in {other}')}; function words "
                        f"{T.verdict(df, 'kept relatively more by minilm', f'kept relatively more by {other}')}.")
    return table, paired, verdicts


def spread_section(models, data) -> tuple[list[str], list[str]]:
    """Claim 4: how much a feature singles out some words (std of the contrast, the top word's contrast)."""
    table = ["| model | feature | n | std of log σ over the words, nats/dim, noise-corrected [95 % CI] | per-word "
             "errors alone would give (rms SE) | most-kept word's contrast, nats/dim, noise-corrected [95 % CI] |",
             "|---|---|---|---|---|---|"]
    got = {}
    for name, label, exs, f in task_features(models, data):
        rows = T.gather_readings(exs, f, f"{name}/{label}/spread")
        sd, top = T.per_sentence(rows, T.spread), T.per_sentence(rows, T.top_contrast)
        floor = np.median([v for v in map(T.noise_floor, rows.values()) if v is not None])
        got[(name, label)] = (sd, top)
        table.append(f"| {name} | {label} | {len(sd)} | {T.fmt(T.interval(sd, bias_correct=True))} | {floor:.3f} | "
                     f"{T.fmt(T.interval(top, bias_correct=True))} |")
    verdicts = []
    for label, other in vs_minilm(models):
        dsd = T.paired(got[("minilm", label)][0], got[(other, label)][0], bias_correct=True)
        dtop = T.paired(got[("minilm", label)][1], got[(other, label)][1], bias_correct=True)
        verdicts.append(f"- {label}, minilm − {other}: std of log σ {T.fmt(dsd)}: "
                        f"{T.verdict(dsd, 'minilm contrasts its words more', f'{other} contrasts its words more')}; "
                        f"top word {T.fmt(dtop)}: {T.verdict(dtop, 'minilm singles out its top word more', f'{other} singles out its top word more')}.")
    return table, verdicts


def summarise(models, work: Path, timing: dict, fig_dir: Path, doc: Path, command: str) -> None:
    """Stage 2: every claim from the chunks in ``work``, written to ``doc`` and its figures."""
    import matplotlib

    matplotlib.use("Agg")
    sentiment, function = T.lexicons()
    data = {name: {"layers": gather(work, name, "layers"), "output": gather(work, name, "output")} for name in models}
    n = {name: (sum(map(len, d["layers"])), sum(map(len, d["output"]))) for name, d in data.items()}
    table1, rises = depth_section(models, data, fig_dir)
    table2, table2b, verdicts2 = words_section(models, data, sentiment, function)
    table3 = T.specials_section(models, data, fig_dir)
    table4, verdicts4 = spread_section(models, data)
    table5 = T.determined_section(models, data)
    table6 = T.departures_section(models, data)
    sizes = "; ".join(f"{m}: {a} (layers), {b} (prediction)" for m, (a, b) in n.items())
    lines = ["# The paper's findings, measured", "",
             "Guan et al. (2019) report that corpus-level information is lost with depth, that BERT singles out task "
             "words where LSTM and CNN spread over neighbourhoods and function words, and that BERT forgets [SEP] "
             "early. This page measures each claim on this repository's four zoo models (sentiment polarity, README), "
             f"on the first held-out test sentences ({sizes}; n per row in every table), with default settings "
             "(tolerance 0.05, σ_S fitted per model and layer on 256 training sentences).", "",
             f"Produced by {command} ({', '.join(f'{m}: {seconds(timing, m)}' for m in models)} of chunk time on "
             "a 2-core CPU; upper bounds where other jobs ran). The chunks are committed "
             "(`benchmarks/results/findings/`, σ and its standard errors per sentence): the same command resumes where "
             "they stop and only computes what is missing; `--summary-only` rewrites this page from them.", "",
             "**Intervals and the per-word error bars.** Intervals are 95 % percentile bootstrap intervals over "
             "sentences (2000 resamples). Each σ also comes with a standard error from the noise draws, and a word's "
             "reading inherits it (`word_kept_se`). Each sentence's estimate already holds that error, so the spread "
             "over sentences carries it once; to show how much of an interval it makes, every measure of sections 1–4 "
             f"is also computed on {T.DRAWS} copies of each sentence with every word's reading moved by its own error "
             "(normal, independent between words, never past the cap), and section 1 prints the interval those copies "
             "alone give for the same sentences. For the std and the top word (section 4), which noise pushes up, "
             "the copies' mean offset is subtracted from each estimate (a parametric bootstrap bias correction). "
             "Sections 5 and 6 read the error bars directly. A verdict is stated only where the interval excludes "
             f"the null and n ≥ {T.MIN_N}; there are about 40 of them, each at 95 %, not corrected for multiplicity. "
             "How far to trust the error bars themselves: on a linear logit sampled without its control variate the "
             "default's intervals cover the truth 25–50 % of the time, on the zoo Transformer's logit 77 %, on the "
             "CNN's 98 % (docs/method.md, \"Error bars\"), so on a prediction they are a lower bound on the "
             "uncertainty of σ.", "",
             "**Which word reading, and why.** Every reading is per dimension and the mean over a word's pieces (a word "
             "minilm's tokenizer cut in two reads like one piece with the same σ; the word models have one piece per "
             "word). Depth (1) compares one model's layers on an absolute level: the mean word entropy per dimension "
             "(its level is set by the model's embedding scale, so compare slopes across models, not levels). Which "
             "words a feature singles out (2, 4) uses the **contrast**: a word's kept information per dimension minus "
             "the sentence's mean word's, the same as the sentence's mean log σ minus the word's. Kept information is "
             "measured from the σ cap, so every word keeps most of it and a word's share of the sentence sits near 1/W "
             "whatever the model does (the shares this page used before moved by a few per cent between models); in "
             "the contrast the cap cancels, and as a log ratio of tolerated noise it puts models of different widths "
             "and embedding scales on one scale. Forgetting (3) is measured against the cap, because forgotten means "
             "σ at the cap: a special token's kept information over the mean word's (0 = forgotten).", "",
             "**Read with care.** (1) minilm's prediction costs ~2 min a sentence on this CPU, so its n is small and "
             "paired comparisons at the output rest on those few sentences; the last hidden layer uses more. "
             "(2) Rows with a low converged share are approximate (the stationarity test is conservative on the last "
             "layers and logits, docs/performance.md). (3) The word models read out-of-vocabulary words as `<unk>` and "
             "count punctuation as words, where minilm's tokenizer splits a rare word into pieces: in the paired "
             "comparisons the models do not see exactly the same words. (4) The zoo models are small and trained here for sentiment polarity, not the paper's "
             "BERT-base on SST-2/CoLA/QQP.", "",
             "## 1. Corpus-level entropy against depth", "", *table1, "",
             "Entropy per dimension is a differential entropy, ½·log(2πe·σ²), so it is negative where σ is small. "
             "Change from the first to the last hidden layer, and from the last layer to the prediction (paired over "
             "sentences; the share of sentences whose estimate rose, and whose rise exceeds 1.96 of its own standard "
             "errors from the copies):", "",
             "| model | from → to | change, nats/dim [95 % CI] | sentences where it rose | rose beyond its error | verdict |",
             "|---|---|---|---|---|---|", *rises, "",
             "The layer-to-layer rows are the paper's claim. The last-layer-to-prediction rows are not the same kind "
             "of step: the prediction is one number, the layer a vector, and a single number can be kept within the "
             "same tolerance by far fewer directions of the input, so a rise there is expected by construction; the "
             "figure draws it dotted.", "", "![depth](figures/findings_depth.png)", "",
             "Right panel: the median over sentences of a sentence's median word 95 % half-width (1.96 standard "
             "errors; section 5's column) against the median spread of its words (std of log σ). Two words are "
             "ordered when their intervals are apart, i.e. their gap exceeds about 2.8 standard errors (1.4 "
             "half-widths) for equal errors; where the half-width is a small part of the spread, most pairs are.", "",
             "## 2. Sentiment words against function words", "",
             f"Sentiment words: VADER's lexicon (`vaderSentiment` 3.3.2), |valence| ≥ {T.SENTIMENT_MIN} "
             f"({len(sentiment)} words); function words: English closed-class words (determiners, pronouns, "
             "prepositions, conjunctions, auxiliaries and a few particles: `findings_tables.CLOSED_CLASS`) minus any "
             "word VADER scores, VADER's negations and intensifiers, and *but* and *too*, which carry polarity "
             f"({len(function)} words). Per sentence with at least one such "
             "word and one other: their mean contrast (kept information per dimension above the sentence's mean word; "
             "0 = no preference, > 0 = kept more than the average word). Contrasts sum to 0 over a sentence, so a "
             "class's contrast also depends on how much of the sentence it is; the last column compares the two "
             "classes within the same sentences.", "", *table2, "",
             "Paired over the same sentences (the paper: BERT relies on meaningful words, LSTM and CNN more on function "
             "words):", "", *table2b, "", *verdicts2, "",
             "## 3. [CLS] and [SEP] in the BERT model (minilm)", "", *table3, "",
             "![specials](figures/findings_specials.png)", "",
             "## 4. How much a feature singles out some words", "",
             "The spread of the words' contrast (std of log σ over the words, nats/dim: 0 = every word tolerates the "
             "same noise), what the per-word errors alone would give, and how far the most-kept word stands above the "
             "mean word; both corrected for the push the per-word noise gives them (the copies' mean offset).", "",
             *table4, "",
             "Paired differences (the paper: BERT and the Transformer single out task words, LSTM and CNN spread over "
             "neighbourhoods):", "", *verdicts4, "",
             "## 5. How determined the explanations are, and how often a prediction has two ways to its answer", "",
             "On a prediction the default checks for other optima (`starts=3`): a sentence is *ambiguous* when another "
             "start ends within the gap with other words kept, i.e. the model has more than one set of words it can "
             "rest its answer on (redundant evidence: \"great … wonderful\"); its interval is Clopper–Pearson's. "
             "Hidden layers are not checked. A word pair is *ordered* when the two 95 % intervals are apart; a word "
             "*could swap with a rank neighbour* when its interval overlaps that of the word ranked next above or "
             "below it (with 15–20 words a sentence, most words have a close neighbour even where most pairs are "
             "ordered).", "", *table5, "",
             "## 6. Where the answer departs from the linearised one", "",
             "The linearised σ (`method=\"linearized\"`: the closed form for a feature linear in the noise, one "
             "Jacobian, the regime Saliency lives in) against the default's, per word, Δ = log σ − linearised log σ per "
             "dimension. A common offset only rescales every word; the spread of Δ over a sentence's words is the "
             "part that can reorder them. \"Leaves its error bar\": the word's centred Δ is larger than 1.96 of its "
             "standard errors, among the words with a measured error (words at the cap are left out). The "
             "linearised σ is exact on a prediction (its exact Jacobian); on hidden layers it is a Monte-Carlo "
             "estimate whose own error is not counted, so there this share is an upper bound. A sentence whose "
             "linearised σ is the same for every word (a confident prediction whose gradient is ~0 lets every word "
             "take the cap) is counted in its own column and left out of the others. Whether departures on the "
             "prediction are the more faithful ones is measured in docs/evaluation.md.", "", *table6, ""]
    write_text(doc, "\n".join(lines) + "\n")
    print(f"wrote {doc}")


def seconds(timing: dict, model: str) -> str:
    """The model's chunk seconds on this CPU, and on any other device a chunk was computed on."""
    by_device: dict[str, float] = {}
    for k, v in timing.items():
        if k.startswith(model + "-"):
            device = k.partition("@")[2] or "cpu"
            by_device[device] = by_device.get(device, 0.0) + v
    cpu = f"{by_device.pop('cpu', 0.0):.0f} s"
    return cpu + "".join(f" (+ {v:.0f} s on {d})" for d, v in by_device.items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--output-sentences", type=int, default=200, help="sentences whose prediction is explained")
    p.add_argument("--minilm-sentences", type=int, help="sentences whose minilm layers are explained "
                   "(default: --sentences; ~100 s a sentence for its six layers on a 2-core CPU)")
    p.add_argument("--minilm-output-sentences", type=int, default=8,
                   help="minilm's predicted logit costs ~2 min a sentence on a 2-core CPU")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--chunk", type=int, default=20)
    p.add_argument("--work", default="benchmarks/results/findings")
    p.add_argument("--doc", default="docs/findings.md")
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (the model goes there; the chunks are the same files)")
    p.add_argument("--reverse", action="store_true", help="last chunk first: a second process on the same "
                   "--work with --reverse shares the work with the first (they meet in the middle)")
    p.add_argument("--parts", default="layers,output", help="what to compute first (e.g. output,layers)")
    p.add_argument("--runs", help="the commands that produced the files in --work, as stated in the page "
                   "(default: this command)")
    args = p.parse_args()
    models = [m.strip() for m in args.models.split(",")]
    texts = [e.text for e in load_polarity("test")[: args.sentences]]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    n_layers = {m: min(args.minilm_sentences or args.sentences if m == "minilm" else args.sentences, len(texts))
                for m in models}
    n_out = {m: min(args.minilm_output_sentences if m == "minilm" else args.output_sentences, len(texts)) for m in models}
    timing_path = work / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    if not args.summary_only:
        run(models, texts, n_layers, n_out, work, args.chunk, args.max_steps, timing, tuple(args.parts.split(",")), args.reverse,
            args.device)
    command = "python benchmarks/paper_findings.py" + "".join(
        f" --{k.replace('_', '-')} {getattr(args, k)}" for k in ("sentences", "output_sentences", "minilm_sentences", "minilm_output_sentences")
        if getattr(args, k) != p.get_default(k))
    summarise(models, work, timing, Path(args.doc).parent / "figures", Path(args.doc),
              args.runs or f"`{command}`")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
