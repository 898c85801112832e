"""The per-sentence measures behind docs/findings.md, with each word's error bar carried through, and
the tables of its sections 3, 5 and 6.

Every measure is a function of one sentence's word readings at one feature. The readings come as
a matrix: row 0 the estimate, rows 1..DRAWS copies with each word's kept information perturbed
by its own standard error (``word_kept_se``: normal, independent between words), so a measure
computed on every row gives its estimate and its spread from the per-word errors at once;
``interval`` gives the interval over sentences and, beside it, the part those errors alone make
(``bootstrap_ci_draws``).

Which reading each claim uses, and why (the page says it too):

- depth (claim 1): the mean word entropy per dimension, an absolute level; the claim compares the
  layers of one model, which share the embedding scale (the level is not comparable across models);
- which words a feature singles out (claims 2 and 4): the **contrast**, a word's kept information
  per dimension minus the sentence's mean word's, i.e. the mean log σ of the sentence's words
  minus the word's: the σ cap cancels (kept information measured from the cap sits near 1/W of
  the sentence for every word, so shares and their ratios hardly move), a word cut into pieces
  counts once, and it is a log ratio of tolerated noise, so models of different widths and
  embedding scales share it;
- forgetting (claim 3): a special token's kept information over the mean word's, because
  "forgotten" means σ at the cap (kept 0) and the cap is the reference for that.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captum_entropy import LayerExplanation
from captum_entropy._bootstrap import DrawsInterval, bootstrap_ci_draws
from captum_entropy.readings import Z95
from captum_entropy.viz import save_figure

DRAWS = 200  # perturbed copies of each sentence's readings
SENTIMENT_MIN = 1.0  # |mean valence| in VADER's lexicon for a sentiment word


# English closed-class words (a word list written here: the `stop-words` package's list held
# content words such as *small*, *new*, *work*, *computer*); lexicons() removes any that VADER scores
CLOSED_CLASS = """
a an the this that these those each every either neither some any all both another other such no
what which whatever whichever whose my your his her its our their
i me mine myself you yours yourself yourselves he him himself she hers herself it itself we us ours
ourselves they them theirs themselves who whom whoever one oneself someone somebody something anyone
anybody anything everyone everybody everything
about above across after against along amid among around as at before behind below beneath beside
besides between beyond by despite down during except for from in inside into near of off on onto
out outside over past per since than through throughout till to toward towards under underneath
until up upon via with within without
and or nor so yet because although though while whereas if unless whether once when where whenever
wherever how why then
be am is are was were been being have has had having do does did doing will would shall should can
could may might must 's 're 've 'll 'd 'm
not there here also just only even still ever
"""
POLARITY_SHIFTERS = {"but", "too"}  # VADER's contrastive "but"; "too" as in "too long": not neutral


def lexicons() -> tuple[set[str], set[str]]:
    """Sentiment words (VADER, |valence| ≥ 1) and function words (:data:`CLOSED_CLASS`: English
    determiners, pronouns, prepositions, conjunctions, auxiliaries and particles, minus VADER's
    scored words, negations and intensifiers, and minus *but* and *too*: those carry polarity)."""
    import vaderSentiment
    from vaderSentiment.vaderSentiment import BOOSTER_DICT, NEGATE

    valence = {}
    with open(Path(vaderSentiment.__file__).with_name("vader_lexicon.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                valence[parts[0]] = float(parts[1])
    sentiment = {w for w, v in valence.items() if abs(v) >= SENTIMENT_MIN}
    function = {w for w in CLOSED_CLASS.split() if w not in valence and w not in NEGATE and w not in BOOSTER_DICT
                and w not in POLARITY_SHIFTERS}
    return sentiment, function


@dataclass
class Readings:
    """One sentence at one feature: ``kept`` and ``entropy`` (1 + DRAWS, W) per dimension (row 0 the
    estimate), ``special`` (1 + DRAWS, S) kept per dimension of its special tokens, the words."""

    kept: np.ndarray
    entropy: np.ndarray
    special: np.ndarray
    special_names: list[str]
    words: list[str]
    se_known: bool


def readings(ex: LayerExplanation, f: int, b: int, seed: int) -> Readings:
    """Sentence ``b`` of ``ex`` at feature ``f`` with DRAWS perturbed copies (seeded; a NaN error,
    not measured, perturbs nothing and clears ``se_known``; no copy goes past the cap, kept ≥ 0)."""
    rng = np.random.default_rng(seed)
    kept = ex.word_kept(b)[f].double().numpy()
    se = ex.word_kept_se(b)[f].double().numpy()
    entropy = ex.word_entropy(b)[f].double().numpy()
    g = ex.groupings[b]
    special = (g.special_values(ex.token_kept[:, b]) / ex.n_dims)[f].double().numpy()
    special_se = g.special_values(ex.log_sigma_se[:, b])[f].double().numpy()
    known = bool(np.isfinite(se).all() and np.isfinite(special_se).all())
    shift = np.maximum(rng.standard_normal((DRAWS, kept.size)) * np.nan_to_num(se), -kept)
    special_shift = np.maximum(rng.standard_normal((DRAWS, special.size)) * np.nan_to_num(special_se), -special)
    return Readings(kept=np.vstack([kept, kept + shift]),
                    entropy=np.vstack([entropy, entropy - shift]),  # entropy per dim = const − kept per dim
                    special=np.vstack([special, special + special_shift]),
                    special_names=g.special_names(), words=ex.words(b), se_known=known)


def sentences(exs: list[LayerExplanation]):
    """``(index in the run, chunk, index in the chunk)`` of every sentence of the chunks ``exs``, in order."""
    offset = 0
    for ex in exs:
        for b in range(len(ex)):
            yield offset + b, ex, b
        offset += len(ex)


def gather_readings(exs: list[LayerExplanation], f: int, tag: str) -> dict[int, Readings]:
    """Every sentence of the chunks ``exs`` (in order) at feature ``f``, keyed by its index in the
    run; ``tag`` (e.g. "minilm/layer3/depth") makes each feature's perturbations its own, the same
    on every machine and whatever other models run (seed = (crc32 of tag, sentence))."""
    key = zlib.crc32(tag.encode())
    return {i: readings(ex, f, b, seed=np.random.SeedSequence([key, i]).generate_state(1)[0])
            for i, ex, b in sentences(exs)}


# -- per-sentence measures: each maps Readings to (1 + DRAWS,) or None --------------------------

def mean_entropy(r: Readings) -> np.ndarray:
    """The mean word entropy per dimension (nats)."""
    return r.entropy.mean(1)


def contrast_on(r: Readings, words: set[str]) -> np.ndarray | None:
    """The mean contrast of the sentence's words in ``words`` (their kept information per dimension
    minus the sentence's mean word's, nats/dim); None without such a word or without any other."""
    hit = [i for i, w in enumerate(r.words) if w.lower() in words]
    if not hit or len(hit) == len(r.words):
        return None
    return r.kept[:, hit].mean(1) - r.kept.mean(1)


def fraction_on(r: Readings, words: set[str]) -> float:
    """The fraction of the sentence's words that are in ``words``."""
    return float(np.mean([w.lower() in words for w in r.words]))


def spread(r: Readings) -> np.ndarray | None:
    """The std over the words of their contrast (= of the words' mean log σ), nats/dim."""
    return r.kept.std(1, ddof=1) if r.kept.shape[1] >= 2 else None


def top_contrast(r: Readings) -> np.ndarray | None:
    """How far the most-kept word stands above the sentence's mean word (nats/dim)."""
    return r.kept.max(1) - r.kept.mean(1) if r.kept.shape[1] >= 2 else None


def noise_floor(r: Readings) -> float | None:
    """The spread per-word errors alone would give: the root mean square of the words' standard errors."""
    if r.kept.shape[1] < 2:
        return None
    return float(np.sqrt(((r.kept[1:] - r.kept[0]) ** 2).mean()))


def special_ratio(r: Readings, name: str) -> np.ndarray | None:
    """The special token's kept information per dimension over the mean word's (1 = an average
    word, 0 = forgotten)."""
    if name not in r.special_names:
        return None
    return r.special[:, r.special_names.index(name)] / np.maximum(r.kept.mean(1), 1e-12)


def per_sentence(rows: dict[int, Readings], measure) -> dict[int, np.ndarray]:
    """``measure`` on every sentence where it is defined."""
    out = {}
    for k, r in rows.items():
        v = measure(r)
        if v is not None:
            out[k] = np.asarray(v, dtype=float)
    return out


def interval(values: dict[int, np.ndarray], seed: int = 0, bias_correct: bool = False) -> DrawsInterval:
    """The mean over sentences with its 95 % interval over sentences, and the part the per-word
    errors alone make (``bootstrap_ci_draws``; ``bias_correct`` for a std or a max)."""
    if not values:
        return bootstrap_ci_draws(np.zeros(0), np.zeros((0, 1)))
    x = np.stack([values[k] for k in sorted(values)])
    return bootstrap_ci_draws(x[:, 0], x[:, 1:], seed=seed, bias_correct=bias_correct)


def paired(a: dict[int, np.ndarray], b: dict[int, np.ndarray], bias_correct: bool = False) -> DrawsInterval:
    """The mean of a − b over the sentences both have (their perturbations are independent)."""
    keys = sorted(set(a) & set(b))
    return interval({k: a[k] - b[k] for k in keys}, bias_correct=bias_correct)


def fmt(c: DrawsInterval, digits: int = 3) -> str:
    """``"mean [low, high]"``."""
    return f"{c.mean:.{digits}f} [{c.low:.{digits}f}, {c.high:.{digits}f}]"


MIN_N = 20  # fewer sentences: no verdict (a percentile interval on a handful covers well under 95 %)


def verdict(c: DrawsInterval, up: str, down: str) -> str:
    """``up`` if the interval is above 0, ``down`` if below, else says it contains 0; no verdict
    on fewer than :data:`MIN_N` sentences."""
    if c.n < MIN_N or not (np.isfinite(c.low) and np.isfinite(c.high)):
        return f"too few sentences to tell (n = {c.n})"
    if c.low > 0:
        return f"{up} (n = {c.n})"
    if c.high < 0:
        return f"{down} (n = {c.n})"
    return f"no clear difference (the interval contains 0; n = {c.n})"


# -- how determined the explanations are (straight from the explanations: no perturbation) -------

def order_measures(exs: list[LayerExplanation], f: int) -> dict[str, dict[int, np.ndarray]]:
    """Per sentence at feature ``f``: the share of its word pairs whose 95 % intervals are apart
    (``word_ordered``), the share of its words whose interval overlaps that of a rank neighbour
    (``word_undetermined``: they could swap places),
    the median half-width of its words' intervals (nats/dim), and whether it is flagged ambiguous
    (another optimum within the gap keeps other words). Values as (2,) arrays: estimate, copy."""
    names = ("ordered", "undetermined", "half_width", "ambiguous")
    out: dict[str, dict[int, np.ndarray]] = {k: {} for k in names}
    for i, ex, b in sentences(exs):
        w = ex.groupings[b].n_words
        if w >= 2:
            vals = (float(ex.word_ordered(b)[f].sum()) / (w * (w - 1) / 2),
                    float(ex.word_undetermined(b)[f].float().mean()),
                    float(ex.word_kept_half_width(b)[f].median()),
                    float(ex.ambiguous[f, b]))
            for k, v in zip(names, vals):
                out[k][i] = np.array([v, v])
    return out


# -- how far σ departs from the linearised σ (a Jacobian norm: Saliency's regime) ----------------

def departures(exs: list[LayerExplanation], f: int) -> dict[str, dict[int, np.ndarray]]:
    """Per sentence at feature ``f``, with Δ = a word's log σ minus its linearised log σ (per
    dimension, the mean over its pieces): the median |Δ| (nats/dim), the std of Δ over the words
    (the part that can reorder them; a common offset only rescales), the Spearman correlation of
    the two orders (NaN where either gives every word the same σ), whether the linearised σ is the
    same for every word (``flat``: a confident prediction whose Jacobian is ~0 lets every word
    take the cap), and the share of words whose centred Δ exceeds their 95 % error bar. Values as
    (2,) arrays (estimate, copy); sentences without the linearised σ (older files) are skipped."""
    from scipy.stats import spearmanr

    names = ("abs", "spread", "spearman", "beyond", "flat")
    out: dict[str, dict[int, np.ndarray]] = {k: {} for k in names}
    for i, ex, b in sentences(exs):
        g = ex.groupings[b]
        lin = g.mean(ex.linear_log_sigma[f, b]).double().numpy()
        own = g.mean(ex.log_sigma[f, b]).double().numpy()
        if g.n_words < 3 or not np.isfinite(lin).all():
            continue
        flat = np.ptp(lin) == 0
        out["flat"][i] = np.array([float(flat)] * 2)
        if flat:  # nothing to compare the answer with: counted, left out of the rest
            continue
        delta = own - lin
        centred = delta - delta.mean()
        rho = spearmanr(own, lin).statistic if np.ptp(own) > 0 else np.nan
        se = ex.word_kept_se(b)[f].double().numpy()
        known = np.isfinite(se) & (se > 0)  # words at the cap (error 0) or unmeasured: not judged
        beyond = np.mean(np.abs(centred[known]) > Z95 * se[known]) if known.any() else np.nan
        for k, v in zip(names, (np.median(np.abs(delta)), delta.std(ddof=1), rho, beyond)):
            out[k][i] = np.array([v, v], dtype=float)
    return out


# -- the tables of sections 3, 5 and 6 -------------------------------------------------------------

def determined_section(models, data) -> list[str]:
    """How determined the word orders are, and how often a prediction has two ways to its answer."""
    from scipy.stats import binomtest

    table = ["| model | feature | n | flagged ambiguous [95 % CI] | word pairs ordered (intervals apart) [95 % CI] | "
             "words that could swap with a rank neighbour [95 % CI] | a word's 95 % half-width, nats/dim (median) |",
             "|---|---|---|---|---|---|---|"]
    flagged = []
    for name in models:
        outs = data[name]["output"]
        flagged.append(f"{name} {int(sum(int(e.ambiguous[0].sum()) for e in outs))} of {sum(map(len, outs))}")
        for label, exs, fs in (("hidden", data[name]["layers"], range(len(data[name]["layers"][0].features))),
                               ("output", data[name]["output"], [0])):
            for f in fs:
                m = order_measures(exs, f)
                k, n = int(sum(v[0] for v in m["ambiguous"].values())), len(m["ambiguous"])
                ci = binomtest(k, n).proportion_ci(method="exact") if n else None
                amb = f"{k} of {n} [{ci.low:.2f}, {ci.high:.2f}]" if label == "output" and ci else "not checked"
                feature = exs[0].features[f]
                table.append(f"| {name} | {feature} | {len(m['ordered'])} | {amb} | {fmt(interval(m['ordered']), 2)} | "
                             f"{fmt(interval(m['undetermined']), 2)} | {np.median([v[0] for v in m['half_width'].values()]):.3f} |")
    return table + ["", f"Predictions flagged ambiguous: {'; '.join(flagged)}."]


def departures_section(models, data) -> list[str]:
    """How far each feature's σ departs from its linearised σ."""
    table = ["| model | feature | n | linearised σ the same for every word | a sentence's median \\|Δ log σ\\| over its "
             "words, nats/dim: mean [95 % CI] (median) | spread of Δ over the words [95 % CI] | Spearman with the "
             "linearised order [95 % CI] | sentences below 0.9 | words whose Δ leaves their error bar [95 % CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in models:
        for exs in (data[name]["layers"], data[name]["output"]):
            for f, feature in enumerate(exs[0].features):
                d = departures(exs, f)
                if not d["flat"]:
                    table.append(f"| {name} | {feature} | 0 | (chunks saved before the linearised σ was kept) | | | | | |")
                    continue
                rho = interval(d["spearman"])
                below = np.mean([v[0] < 0.9 for v in d["spearman"].values() if np.isfinite(v[0])])
                flat = int(sum(v[0] for v in d["flat"].values()))
                median = np.median([v[0] for v in d["abs"].values()])
                table.append(f"| {name} | {feature} | {len(d['flat'])} | {flat} | {fmt(interval(d['abs']))} ({median:.3f}) | "
                             f"{fmt(interval(d['spread']))} | {fmt(rho)} (n = {rho.n}) | {below:.0%} of {rho.n} | "
                             f"{fmt(interval(d['beyond']), 2)} |")
    return table


def specials_section(models, data, fig_dir: Path) -> list[str]:
    """Claim 3: how much of [CLS] and [SEP] each minilm layer keeps, with its figure."""
    from matplotlib.figure import Figure

    if "minilm" not in models:
        return ["(minilm not in this run.)"]
    layers = data["minilm"]["layers"]
    names = layers[0].features
    rows = [gather_readings(layers, f, f"minilm/{names[f]}/specials") for f in range(len(names))]
    cis = {tok: [interval(per_sentence(r, lambda x: special_ratio(x, tok))) for r in rows] for tok in ("[CLS]", "[SEP]")}
    out = ["Kept information per dimension of the special token over the sentence's mean word's (1 = kept like an "
           "average word, 0 = forgotten):", "", "| layer | [CLS] kept / mean word's kept [95 % CI] | "
           "[SEP] kept / mean word's kept [95 % CI] | n |", "|---|---|---|---|"]
    out += [f"| {n_} | {fmt(cis['[CLS]'][f])} | {fmt(cis['[SEP]'][f])} | {cis['[SEP]'][f].n} |" for f, n_ in enumerate(names)]
    sep = cis["[SEP]"]
    low = min(range(len(names)), key=lambda f: sep[f].mean)
    out += ["", f"The paper: BERT forgets [SEP] by layers 3–4 (of 12). Here (minilm, 6 layers): [SEP] keeps "
            f"{sep[0].mean:.2f} of the mean word's information at {names[0]} and {sep[low].mean:.2f} at its lowest "
            f"({names[low]}); " + ("at every layer its interval lies above half the mean word (never forgotten in the "
                                   "sense used here: kept ≥ half of an average word), so the paper's finding is not "
                                   "reproduced on this model." if all(c.low > 0.5 for c in sep) else
                                   "it falls below half the mean word, as the paper reports." if any(c.high < 0.5 for c in sep)
                                   else "its interval reaches half the mean word at some layer: inconclusive."), ""]
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
