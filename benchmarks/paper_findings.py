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
    table = ["| model | feature (relative depth) | mean word entropy per dimension, nats [95 % CI] | from the sentences "
             "alone | from the per-word errors alone | n | converged |", "|---|---|---|---|---|---|---|"]
    rises, tag = [], 0
    for name in models:
        layers, outs = data[name]["layers"], data[name]["output"]
        n_hidden = len(layers[0].features)
        names, depth = layers[0].features + ["output"], layers[0].depth + [outs[0].depth[0]]
        rows = [T.gather_readings(layers, f, tag := tag + 1) for f in range(n_hidden)] + [T.gather_readings(outs, 0, tag := tag + 1)]
        ent = [T.per_sentence(r, T.mean_entropy) for r in rows]
        conv = [float(torch.cat([e.converged[f] for e in layers]).float().mean()) for f in range(n_hidden)]
        conv += [float(torch.cat([e.converged[0] for e in outs]).float().mean())]
        cis = [T.interval(e) for e in ent]
        for n_, d, c, cv in zip(names, depth, cis, conv):
            table.append(f"| {name} | {n_} ({d:.2f}) | {T.fmt(c)} | ± {np.diff(c.sentences)[0] / 2:.3f} | "
                         f"± {np.diff(c.errors)[0] / 2:.4f} | {c.n} | {cv:.0%} |")
        line = ax.errorbar(depth, [c.mean for c in cis], yerr=[[c.mean - c.low for c in cis], [c.high - c.mean for c in cis]],
                           marker="o", capsize=3, label=f"{name} (n = {cis[0].n}; prediction {cis[-1].n})")
        ax.errorbar(depth, [c.mean for c in cis], yerr=[[c.mean - c.errors[0] for c in cis], [c.errors[1] - c.mean for c in cis]],
                    fmt="none", lw=6, alpha=0.35, color=line[0].get_color())
        half = [float(np.median([1.96 * T.noise_floor(r) for r in rr.values() if T.noise_floor(r) is not None])) for rr in rows]
        contrast = [float(np.median(list(T.per_sentence(rr, lambda r: T.spread(r)[0] if T.spread(r) is not None else None).values())))
                    for rr in rows]
        ax2.plot(depth, half, marker="o", color=line[0].get_color(), label=f"{name}: a word's 95 % half-width")
        ax2.plot(depth, contrast, marker="s", ls="--", color=line[0].get_color(), alpha=0.6,
                 label=f"{name}: spread of words (std of log σ)")
        pairs = [(f"{names[n_hidden - 1]} → output (first {len(ent[-1])})", ent[n_hidden - 1], ent[-1])]
        if n_hidden > 1:
            pairs.insert(0, (f"{names[0]} → {names[n_hidden - 1]}", ent[0], ent[n_hidden - 1]))
        for what, a, b in pairs:
            d = T.paired(b, a)
            keys = sorted(set(a) & set(b))
            rose = np.mean([b[k][0] > a[k][0] for k in keys])
            rises.append(f"| {name} | {what} | {T.fmt(d)} | {rose:.0%} | {T.verdict(d, 'rose (information lost)', 'fell')} |")
    ax.set_xlim(0, 1.32)
    ticks = ([0, 0.25, 0.5, 0.75, 1.0, 1.25], ["0", "0.25", "0.5", "0.75", "1\n(last layer)", "prediction"])
    ax.set_xticks(*ticks)
    ax2.set_xticks(*ticks)
    ax.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    ax.set_xlabel("relative depth (layer / number of layers; the prediction at 1.25)")
    ax.set_ylabel("mean word entropy per dimension (nats)")
    ax.set_title("Corpus-level entropy against depth (higher = more forgotten)\n"
                 "thin bars: 95 % CI (sentences and per-word errors); thick: per-word errors alone", fontsize=9)
    ax.legend(fontsize=8)
    ax2.set_xlabel("relative depth")
    ax2.set_ylabel("nats/dim (median over sentences)")
    ax2.set_title("A word's own error bar against how much words differ", fontsize=9)
    ax2.legend(fontsize=6.5)
    fig.tight_layout()
    save_figure(fig, fig_dir / "findings_depth.png")
    return table, rises


def words_section(models, data, sentiment: set[str], function: set[str]) -> tuple[list[str], list[str], list[str]]:
    """Claim 2: how much more the sentiment (function) words are kept than the sentence's mean word."""
    table = ["| model | feature | n | sentiment words: contrast, nats/dim [95 % CI] | their fraction of words | "
             "function words: contrast [95 % CI] | their fraction of words |", "|---|---|---|---|---|---|---|"]
    got = {}
    for i, (name, label, exs, f) in enumerate(task_features(models, data)):
        rows = T.gather_readings(exs, f, 100 + i)
        s = T.per_sentence(rows, lambda r: T.contrast_on(r, sentiment))
        fn = T.per_sentence(rows, lambda r: T.contrast_on(r, function))
        got[(name, label)] = (s, fn)
        cs, cf = T.interval(s), T.interval(fn)
        table.append(f"| {name} | {label} | {cs.n} | {T.fmt(cs)} | {np.mean([T.fraction_on(rows[k], sentiment) for k in s]):.3f} "
                     f"| {T.fmt(cf)} | {np.mean([T.fraction_on(rows[k], function) for k in fn]):.3f} |")
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


def specials_section(models, data, fig_dir: Path) -> list[str]:
    """Claim 3: how much of [CLS] and [SEP] each minilm layer keeps, with its figure."""
    from matplotlib.figure import Figure

    if "minilm" not in models:
        return ["(minilm not in this run.)"]
    layers = data["minilm"]["layers"]
    names = layers[0].features
    rows = [T.gather_readings(layers, f, 200 + f) for f in range(len(names))]
    cis = {tok: [T.interval(T.per_sentence(r, lambda x: T.special_ratio(x, tok))) for r in rows] for tok in ("[CLS]", "[SEP]")}
    out = ["Kept information per dimension of the special token over the sentence's mean word's (1 = kept like an "
           "average word, 0 = forgotten):", "", "| layer | [CLS] kept / mean word's kept [95 % CI] | "
           "[SEP] kept / mean word's kept [95 % CI] | n |", "|---|---|---|---|"]
    out += [f"| {n_} | {T.fmt(cis['[CLS]'][f])} | {T.fmt(cis['[SEP]'][f])} | {cis['[SEP]'][f].n} |" for f, n_ in enumerate(names)]
    sep = cis["[SEP]"]
    low = min(range(len(names)), key=lambda f: sep[f].mean)
    out += ["", f"The paper: BERT forgets [SEP] by layers 3–4 (of 12). Here (minilm, 6 layers): [SEP] keeps "
            f"{sep[0].mean:.2f} of the mean word's information at {names[0]} and {sep[low].mean:.2f} at its lowest "
            f"({names[low]}); " + ("it is never forgotten (never below half the mean word), so the paper's finding is "
                                   "not reproduced on this model." if all(c.high >= 0.5 for c in sep) else
                                   "it falls below half the mean word, as the paper reports."), ""]
    for tok in ("[CLS]", "[SEP]"):
        below = [n_ for n_, c in zip(names, cis[tok]) if c.high < 1]
        above = [n_ for n_, c in zip(names, cis[tok]) if c.low > 1]
        half = [n_ for n_, c in zip(names, cis[tok]) if c.high < 0.5]
        out.append(f"- {tok}: kept less than the mean word (interval below 1) at {', '.join(below) or 'no layer'}; more "
                   f"(interval above 1) at {', '.join(above) or 'no layer'}; below half the mean word at "
                   f"{', '.join(half) or 'no layer'}.")
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for tok, c in cis.items():
        ax.errorbar(range(1, len(names) + 1), [x.mean for x in c], yerr=[[x.mean - x.low for x in c], [x.high - x.mean for x in c]],
                    marker="o", capsize=3, label=tok)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("minilm layer")
    ax.set_ylabel("kept information relative to the mean word")
    ax.set_title(f"How much of [CLS] and [SEP] each layer keeps (n = {sep[0].n}; 95 % CI)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, fig_dir / "findings_specials.png")
    return out


def spread_section(models, data) -> tuple[list[str], list[str]]:
    """Claim 4: how much a feature singles out some words (std of the contrast, the top word's contrast)."""
    table = ["| model | feature | n | std of log σ over the words, nats/dim [95 % CI] | per-word errors alone would "
             "give (rms SE) | most-kept word's contrast, nats/dim [95 % CI] |", "|---|---|---|---|---|---|"]
    got = {}
    for i, (name, label, exs, f) in enumerate(task_features(models, data)):
        rows = T.gather_readings(exs, f, 300 + i)
        sd, top = T.per_sentence(rows, T.spread), T.per_sentence(rows, T.top_contrast)
        floor = np.median([v for v in map(T.noise_floor, rows.values()) if v is not None])
        got[(name, label)] = (sd, top)
        table.append(f"| {name} | {label} | {len(sd)} | {T.fmt(T.interval(sd))} | {floor:.3f} | {T.fmt(T.interval(top))} |")
    verdicts = []
    for label, other in vs_minilm(models):
        dsd = T.paired(got[("minilm", label)][0], got[(other, label)][0])
        dtop = T.paired(got[("minilm", label)][1], got[(other, label)][1])
        verdicts.append(f"- {label}, minilm − {other}: std of log σ {T.fmt(dsd)}: "
                        f"{T.verdict(dsd, 'minilm contrasts its words more', f'{other} contrasts its words more')}; "
                        f"top word {T.fmt(dtop)}: {T.verdict(dtop, 'minilm singles out its top word more', f'{other} singles out its top word more')} "
                        f"(n = {dsd.n}).")
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
    table3 = specials_section(models, data, fig_dir)
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
             "**Intervals carry both uncertainties.** Each σ comes with a standard error from the noise draws; a "
             "word's reading inherits it (`word_kept_se`). Every measure below is computed on each sentence's estimate "
             f"and on {T.DRAWS} copies with every word's reading moved by its own error (normal, independent between "
             "words), and the 95 % interval is a two-level bootstrap (2000 resamples): resample the sentences, take a "
             "random copy of each. A claim is stated only where that interval excludes the null. Section 1 also shows "
             "each part alone.", "",
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
             "layers and logits, docs/performance.md); the error bars say how well each σ is determined whatever that "
             "test says. (3) The zoo models are small and trained here for sentiment polarity, not the paper's "
             "BERT-base on SST-2/CoLA/QQP.", "",
             "## 1. Corpus-level entropy against depth", "", *table1, "",
             "Change from the first to the last hidden layer, and from the last layer to the prediction (paired over "
             "sentences; the share of sentences whose estimate rose):", "",
             "| model | from → to | change, nats/dim [95 % CI] | sentences where it rose | verdict |", "|---|---|---|---|---|",
             *rises, "", "![depth](figures/findings_depth.png)", "",
             "Right panel: the median over sentences of a word's 95 % half-width (1.96 × the rms of its words' "
             "standard errors) against the median spread of the words (std of log σ): where the half-width is a "
             "small part of the spread, the order of a sentence's words is determined.", "",
             "## 2. Sentiment words against function words", "",
             f"Sentiment words: VADER's lexicon (`vaderSentiment` 3.3.2), |valence| ≥ {T.SENTIMENT_MIN}; function words: "
             "the `stop-words` package's English list minus any word VADER scores. Per sentence with at least one such "
             "word and one other: their mean contrast (kept information per dimension above the sentence's mean word; "
             "0 = no preference, > 0 = kept more than the average word).", "", *table2, "",
             "Paired over the same sentences (the paper: BERT relies on meaningful words, LSTM and CNN more on function "
             "words):", "", *table2b, "", *verdicts2, "",
             "## 3. [CLS] and [SEP] in the BERT model (minilm)", "", *table3, "",
             "![specials](figures/findings_specials.png)", "",
             "## 4. How much a feature singles out some words", "",
             "The spread of the words' contrast (std of log σ over the words, nats/dim: 0 = every word tolerates the "
             "same noise), what the per-word errors alone would give, and how far the most-kept word stands above the "
             "mean word.", "", *table4, "",
             "Paired differences (the paper: BERT and the Transformer single out task words, LSTM and CNN spread over "
             "neighbourhoods):", "", *verdicts4, "",
             "## 5. How determined the explanations are, and how often a prediction has two ways to its answer", "",
             "On a prediction the default checks for other optima (`starts=3`): a sentence is *ambiguous* when another "
             "start ends within the gap with other words kept, i.e. the model has more than one set of words it can "
             "rest its answer on (redundant evidence: \"great … wonderful\"). Hidden layers are not checked (their "
             "feature is a whole vector; no run has found two optima there). A word pair is *ordered* when the two 95 % "
             "intervals are apart; a word's rank is *not determined* when its interval overlaps its neighbour's in the "
             "ranking.", "", *table5, "",
             "## 6. Where the answer departs from the linearised one", "",
             "The linearised σ (`method=\"linearized\"`: the closed form for a feature linear in the noise, one "
             "Jacobian, the regime Saliency lives in) against the default's, per word, Δ = log σ − linearised log σ per "
             "dimension. A common offset only rescales every word; the spread of Δ over a sentence's words is the "
             "part that can reorder them. \"Leaves its error bar\": the word's centred Δ is larger than 1.96 of its "
             "standard errors (the linearised σ's own Monte-Carlo error on hidden layers is not counted, so this "
             "slightly overstates). Whether departures on the prediction are the more faithful ones is measured in "
             "docs/evaluation.md.", "", *table6, ""]
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
