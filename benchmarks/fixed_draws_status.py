"""Where the fixed-draw solver (``update="fixed_draws"``, experimental) stands, against the default.

Rule names say their settings. ``default`` is today's (0.2; on a logit: antithetic pairs,
precision 0.05, ``starts=3``); ``0.1 default`` and every other Newton rule start from
``common.DEFAULT_0_1`` (independent draws, no precision stop, no check), which made the results
stored before 0.2.

1. **The redundancy toy** (``captum_entropy.evaluate.known.RedundantEvidence``: two words carry the same
   evidence, the output saturates; τ = 0.2, cap 10): σ of words 2 and 5 and the objective (mean
   log σ) of each solver's answer (newton, fixed_draws, and newton with its check of other
   optima, ``starts=3``), its distortion scored on 8192 fresh antithetic draws.
2. **A zoo model's predicted logit** (``minilm``, ``transformer``, ``lstm``, ``cnn``) on the first
   ``--sentences`` held-out test sentences (σ_S from the library's cached 256 training
   sentences), for each rule in ``--updates``: share of sentences that converged (the KKT test for
   fixed_draws), seed 0 against seed 1 (Spearman of σ over real tokens), wall time against
   ``LayerIntegratedGradients(n_steps=50)`` on the same batch and targets, in one process; for
   fixed_draws also the median standard error of log σ, the draws used, ambiguous sentences.

    python benchmarks/fixed_draws_status.py [--sentences 4] [--parts calibration,toy,minilm,cnn] [--updates fixed_draws,newton]

   For every rule also the error bars' promise across seeds: of the word pairs seed 0 orders
   (95 % intervals apart), the share seed 1 puts in the same order and the share it orders the
   other way, and the between-seed SD of log σ over the across-word SD.
3. **Calibration** (``--parts calibration``): how often the 95 % intervals cover the closed form of
   a linear logit sampled without the control variate, on 32 to 256 draws.
4. **Coverage on a real logit** (``--parts coverage-cnn,coverage-transformer``, ...): the default's
   (Newton's) 95 % intervals against a 400-step, 512-draw reference, for ``polish="auto"`` and
   ``"never"`` (0.1's default), the precision stop with antithetic draws, today's default and
   the default with the averaged Jacobian's control variate, over ``--sentences`` sentences × 3
   seeds (``--coverage-rules``: only some of :data:`COVERAGE_RULES`).
5. **Cost against precision** (``--parts precision-cnn,precision-lstm,precision-transformer``;
   ``precision-minilm@layer6`` for a hidden layer, all tokens; ``precision-minilm@pooled`` for
   MiniLM's pooled output):
   Newton with independent or antithetic draws (``antithetic``) and with or without the precision
   stop (``precision``), on the predicted logit of ``--sentences`` sentences: steps, sentences
   converged, seed 0 against seed 1 as in 2., and the wall time against a *warm*
   ``LayerIntegratedGradients(n_steps=50)`` (the fastest of three calls after a warm-up call; part 2
   times its first call).

6. **Agreement against draws** (``--parts draws-minilm``): 0.1's default with 32, 64 and 128 draws
   per step (100 steps; ``--draws-default``: today's default with 64, 128 and 256), seed 0 against
   seed 1 as in 2., per sentence: how agreement grows with the draws where the precision is not
   reached.

Parts 5 and 6 run on a GPU with ``--device cuda`` (MiniLM; the zoo's checkpoint travels with
``benchmarks/gpu_kit.py``); a GPU's draws and σ_S (refitted there) differ from the CPU's, and
its JSON lines name the device. The rules ``newton (default), max_steps 200`` and ``… 400``
are the default with a larger cap on the steps (the precision stop still ends a sentence once
it is precise).

Parts 5 and 6 say what holds back each sentence whose seeds agree below 0.90 (``below_0.90``,
:func:`held_back`): several optima (flagged ambiguous), a flat objective (the answers agree
within their error bars; the words closer than them are ordered by the draws), or a run that
has not settled (the answers differ beyond their error bars).

Prints one JSON object per part.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import torch

from captum_entropy import EntropyAttribution
from captum_entropy.evaluate.known import RedundantEvidence, redundant_sentences
from common import DEFAULT_0_1
from seed_agreement import agreement, held_out, seed_pair, seed_summary, warm_lig_seconds


def fresh_objective(model, x, sigma, draws: int = 8192) -> tuple[float, float]:
    g = torch.Generator().manual_seed(5)
    eps = torch.randn(draws // 2, *x.shape, generator=g)
    eps = torch.cat([eps, -eps])
    with torch.no_grad():
        d = float((model(x[None] + sigma[None] * eps) - model(x[None])).pow(2).mean())
    return round(float(sigma.log().mean()), 3), round(d, 4)


def part_toy() -> dict:
    model = RedundantEvidence()
    x = redundant_sentences(model)
    mirror = x[:2].clone()
    mirror[:, 5] = mirror[:, 2]  # word 5 a copy of word 2: two mirror-image optima
    ea = EntropyAttribution(model, model.emb)
    out = {"part": "redundancy toy (tau=0.2, cap 10; objective = mean log sigma, D on 8192 fresh draws)"}
    rules = {"newton (0.1 default)": {**DEFAULT_0_1, "update": "newton"}, "fixed_draws": {"update": "fixed_draws"},
             "newton, starts=3": {**DEFAULT_0_1, "update": "newton", "starts": 3}, "newton (default)": {}}
    for label, settings in rules.items():
        out[label] = _toy_answers(ea, model, x, settings)
    for label, settings in {"mirror, newton (default)": {}, "mirror, newton, independent draws": {"antithetic": False}}.items():
        out[label] = _toy_answers(ea, model, mirror, settings)
    return out


def _toy_answers(ea, model, x, settings: dict) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ea.attribute_result(x, feature_std=torch.tensor(1.0), max_sigma=10.0, tolerance=0.2, **settings)
    return [{"sigma_2": round(float(res.sigma[b, 2, 0]), 3), "sigma_5": round(float(res.sigma[b, 5, 0]), 3),
             "objective_and_D": fresh_objective(model, x[b], res.sigma[b]), "converged": bool(res.converged[b]),
             "ambiguous": bool(res.ambiguous[b]), "gap": round(float(res.ambiguity_gap[b]), 3),
             "alternative_sigma_2_5": [round(float(res.alternative_sigma[b, i, 0]), 3) for i in (2, 5)]}
            for b in range(len(x))]


def part_calibration(seeds: int = 60) -> dict:
    """Coverage of the 95 % intervals on a linear logit ``Σ_i w_i·x_i`` (5 words, 8 dims) sampled
    without the control variate, where the answer is known in closed form, by number of draws."""
    from captum_entropy.fixed_draw_answer import FixedDrawSettings, explain_sentence
    from captum_entropy.fixed_draws import FixedDrawProblem
    from captum_entropy.objective import linear_solution

    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 8, generator=g, dtype=torch.float64)
    x = torch.randn(1, 5, 8, generator=g, dtype=torch.float64)
    tau, cap = 0.05, 1e3
    f = lambda z: (z * w).sum((1, 2))[:, None]  # noqa: E731
    a = w.pow(2).sum(-1)
    truth = linear_solution(a[None, :, None], torch.ones(1, 5, 1, dtype=torch.bool),
                            torch.tensor(math.log(cap), dtype=torch.float64),
                            tolerance=torch.tensor([tau], dtype=torch.float64))[0, :, 0]
    out = {"part": f"95 % interval coverage on a sampled linear logit (5 words x {seeds} draw sets)"}
    for n in (32, 64, 128, 256):
        covered = 0
        for seed in range(seeds):
            problem = FixedDrawProblem(x, torch.arange(5), f, f(x)[0], None, torch.Generator().manual_seed(seed),
                                       torch.float64)
            sol = explain_sentence(problem, truth, math.log(cap), tau,
                                   FixedDrawSettings(n_draws=n, max_draws=n, starts=1, continuation=()))
            covered += int(((sol.u - truth).abs() <= 1.96 * sol.se).sum())
        out[f"draws_{n}"] = round(covered / (5 * seeds), 3)
    out["newton"] = newton_calibration(w, x, tau, cap, truth, seeds // 2)
    return out


def newton_calibration(w, x, tau, cap, truth, seeds: int) -> dict:
    """The default rule on the same sampled linear logit (``exact_jacobian=0``): mean |error| of
    log σ against the closed form and the 95 % intervals' coverage, for the answer from the
    averaged curvature (``polish="always"``) and the averaged iterate (``"never"``), at 100 and
    400 steps, and with the precision stop at 0.1 and 0.05 (its mean steps too)."""

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Identity()

        def forward(self, z):
            return (self.emb(z) * w).sum((1, 2))[:, None]

    model = Linear()
    ea = EntropyAttribution(model, model.emb)
    runs = {f"polish={polish}, {steps} steps": {"polish": polish, "max_steps": steps}
            for polish in ("always", "never") for steps in (100, 400)}
    # the precision stop: how many steps it takes, and whether its intervals still cover
    runs.update({f"polish={polish}, precision {p} (at most 400 steps)": {"polish": polish, "precision": p, "max_steps": 400}
                 for polish in ("always", "never") for p in (0.1, 0.05)})
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, settings in runs.items():
            errors, covered, steps = [], 0, []
            for seed in range(seeds):
                r = ea.attribute_result(x, feature_std=torch.tensor(1.0), max_sigma=cap, tolerance=tau, seed=seed,
                                        exact_jacobian=0, **settings)
                err = r.sigma[0, :, 0].log() - truth
                errors.append(err.abs())
                covered += int((err.abs() <= 1.96 * r.log_sigma_se[0, :, 0]).sum())
                steps.append(int(r.steps[0]))
            out[label] = {"mean_abs_error": round(float(torch.cat(errors).mean()), 3),
                          "coverage": round(covered / (len(truth) * seeds), 3)}
            if "precision" in settings:
                out[label]["mean_steps"] = round(sum(steps) / len(steps), 1)
    return out


def rule(name: str) -> dict:
    """Settings of an update rule's name: ``"newton"`` (0.1's default, :data:`DEFAULT_0_1`),
    ``"fixed_draws"``, or ``"newton+auto"`` (an update with its ``polish``)."""
    update, _, polish = name.partition("+")
    return {"update": update, **(DEFAULT_0_1 if update == "newton" else {}), **({"polish": polish} if polish else {})}


def part_model(name: str, n: int, updates: tuple[str, ...] = ("fixed_draws",)) -> dict:
    """A zoo model's predicted logit on its first ``n`` held-out test sentences: per update rule,
    seed 0 against seed 1 and the wall time against LayerIntegratedGradients(n_steps=50)."""
    from captum.attr import LayerIntegratedGradients

    zm, stats, ids, mask, pred = held_out(name, n)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    lig = LayerIntegratedGradients(zm.forward, zm.embedding)
    start = time.perf_counter()
    lig.attribute(ids, target=pred, additional_forward_args=(mask,), n_steps=50)
    t_lig = time.perf_counter() - start
    out = {"part": f"{name} predicted logit, {n} held-out sentences (defaults otherwise)",
           "lig_n_steps_50_seconds": round(t_lig, 2)}
    for update in updates:
        r0, r1, seconds, rho = seed_pair(ea, ids, target=pred, additional_forward_args=(mask,), feature_std=stats,
                                         **rule(update))
        finite = [v for v in rho if not math.isnan(v)]
        row = {"converged": f"{int(r0.converged.sum())}/{n}",
               "seed0_vs_seed1_spearman": [None if math.isnan(v) else round(float(v), 3) for v in rho],
               "mean_spearman": round(sum(finite) / len(finite), 3) if finite else None,
               "seconds_seed0": round(seconds, 1), "ratio_to_lig": round(seconds / t_lig, 1)}
        se = r0.log_sigma_se[r0.mask & ~r0.saturated][:, 0]
        row.update(median_se_log_sigma=round(float(se.median()), 3) if se.numel() else None, **agreement(r0, r1))
        if update == "fixed_draws":
            row.update(draws=r0.n_draws.tolist(), ambiguous=r0.ambiguous.tolist())
        out[update] = row
    return out


COVERAGE_RULES = {  # name -> settings, for part_coverage
    "polish=auto": {**DEFAULT_0_1, "polish": "auto"},
    "polish=never": {**DEFAULT_0_1, "polish": "never"},  # 0.1's default
    "antithetic, precision 0.05": {**DEFAULT_0_1, "antithetic": True, "precision": 0.05},
    "antithetic, precision 0.05, polish=auto": {**DEFAULT_0_1, "antithetic": True, "precision": 0.05, "polish": "auto"},
    "default": {},
    "default, averaged J": {"control_variate": "averaged"},
}


def part_coverage(name: str, n: int, seeds: int = 3, ref_samples: int = 512, ref_steps: int = 400,
                  rules: list[str] | None = None) -> dict:
    """The default's 95 % intervals on a zoo model's predicted logit against a long reference
    (the same objective, ``ref_samples`` draws a step for ``ref_steps`` steps, another seed,
    ``polish="auto"``: its own noise and the draws' bias are a fraction of the default's), for
    each rule of :data:`COVERAGE_RULES` (the answer from the averaged curvature, ``polish="auto"``;
    the averaged iterate, ``polish="never"``, 0.1's default; and the precision stop with
    antithetic draws): coverage of the reference by log σ ± 1.96·SE over the free words of ``n``
    sentences × ``seeds`` seeds, the median |Δ log σ| to the reference, the last seed's mean steps."""
    zm, stats, ids, mask, pred = held_out(name, n)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    kw = dict(target=pred, additional_forward_args=(mask,), feature_std=stats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ea.attribute_result(ids, seed=1000, n_samples=ref_samples, max_steps=ref_steps, early_stop=False,
                                  polish="auto", **DEFAULT_0_1, **kw)
        out = {"part": f"{name} predicted logit, {n} sentences x {seeds} seeds: 95 % intervals against a "
                       f"{ref_steps}-step, {ref_samples}-draw reference",
               "reference_median_se": round(float(ref.log_sigma_se[..., 0][ref.mask & ~ref.saturated].median()), 4)}
        for label, settings in COVERAGE_RULES.items():
            if rules is not None and label not in rules:
                continue
            covered = total = 0
            errors = []
            for seed in range(seeds):
                r = ea.attribute_result(ids, seed=seed, **settings, **kw)
                free = r.mask & ~r.saturated & ~ref.saturated
                err = (r.sigma.log() - ref.sigma.log())[..., 0][free]
                covered += int((err.abs() <= 1.96 * r.log_sigma_se[..., 0][free]).sum())
                total += int(free.sum())
                errors.append(err.abs())
            out[label] = {"coverage": round(covered / max(total, 1), 3),
                          "median_abs_error": round(float(torch.cat(errors).median()), 4),
                          "mean_steps": round(float(r.steps.double().mean()), 1)}
    return out


PRECISION_RULES = {  # name -> settings, for part_precision
    "newton (default)": {},  # on a logit: antithetic, precision 0.05, starts 3 (0.2)
    "newton (0.1 default)": DEFAULT_0_1,
    "newton, antithetic": {**DEFAULT_0_1, "antithetic": True},
    "newton, antithetic, precision 0.1": {**DEFAULT_0_1, "antithetic": True, "precision": 0.1},
    "newton, antithetic, precision 0.05": {**DEFAULT_0_1, "antithetic": True, "precision": 0.05},
    "newton, precision 0.05": {**DEFAULT_0_1, "precision": 0.05},
    "newton, antithetic, precision 0.05, starts 3": {**DEFAULT_0_1, "antithetic": True, "precision": 0.05, "starts": 3},
    "newton (default), averaged J": {"control_variate": "averaged"},
    "newton (default), polish auto": {"polish": "auto"},  # the answer: the closed form on the averaged curvature
    # the default with a larger cap on the steps: the precision stop still ends a sentence once it is precise
    "newton (default), max_steps 200": {"max_steps": 200},
    "newton (default), max_steps 400": {"max_steps": 400},
    "newton, antithetic, precision 0.05, averaged J": {**DEFAULT_0_1, "antithetic": True, "precision": 0.05,
                                                       "control_variate": "averaged"},
}


def part_precision(name: str, n: int, rules: list[str] | None = None, layer: str | None = None,
                   first: int = 0, device: str | None = None) -> dict:
    """A zoo model's predicted logit (or hidden ``layer``, all tokens; ``"pooled"``: a Hugging
    Face BERT's pooler output) on ``n`` held-out sentences from test sentence ``first`` on:
    Newton's cost against its determination, per rule in :data:`PRECISION_RULES` (or those named
    in ``rules``), against a warm LIG(n_steps=50) on the predicted logit. Sentence numbers in
    the output are the test split's."""
    from common import zoo_feature_std

    zm, stats, ids, mask, pred = held_out(name, n, first, device)
    module = None if layer is None else zm.model.bert.pooler if layer == "pooled" else zm.layers[layer]
    ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=module)
    target, std = (pred, stats) if layer is None else (None, zoo_feature_std(zm, module))
    t_lig = warm_lig_seconds(zm, ids, mask, pred)
    what = "predicted logit" if layer is None else "pooled output" if layer == "pooled" else layer
    which = f"{n} held-out sentences" if first == 0 else f"held-out test sentences {first}..{first + n - 1}"
    out = {"part": f"{name} {what}, {which}: cost against precision", **_where(ids),
           "warm_lig_n_steps_50_seconds": round(t_lig, 3)}
    for label, settings in PRECISION_RULES.items():
        if rules is not None and label not in rules:
            continue
        r0, r1, seconds, rho = seed_pair(ea, ids, target=target, additional_forward_args=(mask,), feature_std=std,
                                         **settings)
        out[label] = {"mean_steps": round(float(r0.steps.double().mean()), 1), "converged": f"{int(r0.converged.sum())}/{n}",
                      **seed_summary(r0, r1, rho), "ambiguous_seed0": f"{int(r0.ambiguous.sum())}/{n}",
                      "seconds_seed0": round(seconds, 2), "ratio_to_warm_lig": round(seconds / t_lig, 1)}
        for held in out[label]["below_0.90"]:
            held["sentence"] += first
    return out


def _where(ids: torch.Tensor) -> dict:
    """The device of a GPU run, for its JSON line (nothing on the CPU, as the stored lines)."""
    return {"device": torch.cuda.get_device_name(ids.device)} if ids.is_cuda else {}


DRAW_CURVE = (32, 64, 128)  # draws per step for part_draws under 0.1's default: its 64, half and twice
DRAW_CURVE_DEFAULT = (64, 128, 256)  # the same under today's default: its 64, twice and four times


def part_draws(name: str, n: int, per_step: tuple[int, ...] = DRAW_CURVE, settings: dict | None = None,
               device: str | None = None) -> dict:
    """How seed agreement grows with the draws on a zoo model's predicted logit: 0.1's default
    (100 Newton steps, :data:`DEFAULT_0_1`; ``settings={}``: today's default) with ``n_samples`` in
    ``per_step``, seed 0 against seed 1 on the first ``n`` held-out sentences, per sentence and
    summed up, with :func:`held_back` for the sentences below 0.90."""
    settings = DEFAULT_0_1 if settings is None else settings
    zm, stats, ids, mask, pred = held_out(name, n, device=device)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    which = "0.1's defaults" if settings == DEFAULT_0_1 else "today's defaults"
    out = {"part": f"{name} predicted logit, {n} held-out sentences: seed agreement against draws per step "
                   f"(at most 100 steps, {which} otherwise)", **_where(ids)}
    for draws in per_step:
        r0, r1, seconds, rho = seed_pair(ea, ids, target=pred, additional_forward_args=(mask,), feature_std=stats,
                                         n_samples=draws, **settings)
        out[f"n_samples={draws}"] = {"draws_per_sentence": int(r0.steps.sum()) * draws // n, **seed_summary(r0, r1, rho),
                                     "seconds_seed0": round(seconds, 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=4)
    parser.add_argument("--first", type=int, default=0,
                        help="precision-<model> parts: start at this held-out test sentence (resume a run in slices)")
    parser.add_argument("--parts", default="toy,minilm",
                        help="calibration, toy and any of minilm, transformer, lstm, cnn (and coverage-<model>, precision-<model>, "
                             "precision-<model>@<layer>, e.g. precision-minilm@layer6, draws-<model>)")
    parser.add_argument("--updates", default="fixed_draws",
                        help="update rules to compare, e.g. fixed_draws,newton,newton+auto (newton with polish='auto')")
    parser.add_argument("--precision-rules", default=None,
                        help="precision-<model> parts: only these rules, ';'-separated names of PRECISION_RULES")
    parser.add_argument("--draws-default", action="store_true",
                        help=f"draws-<model> parts: today's default with {DRAW_CURVE_DEFAULT} draws a step "
                             f"(without: 0.1's default with {DRAW_CURVE})")
    parser.add_argument("--device", default=None,
                        help="precision-minilm and draws-minilm parts: run the model there (e.g. cuda; the word models "
                             "are cheap on the CPU, and an LSTM's backward needs cuDNN's training mode); default: the CPU")
    parser.add_argument("--coverage-rules", default=None,
                        help="coverage-<model> parts: only these rules, ';'-separated names of COVERAGE_RULES")
    args = parser.parse_args()
    torch.manual_seed(0)
    parts = args.parts.split(",")
    if "calibration" in parts:
        print(json.dumps(part_calibration()))
    if "toy" in parts:
        print(json.dumps(part_toy()))
    rules = None if args.precision_rules is None else args.precision_rules.split(";")
    coverage_rules = None if args.coverage_rules is None else args.coverage_rules.split(";")
    for name in ("minilm", "transformer", "lstm", "cnn"):
        for part in parts:  # precision-<model>, or precision-<model>@<layer> for a hidden layer
            model, _, layer = part.removeprefix("precision-").partition("@")
            if part.startswith("precision-") and model == name:
                print(json.dumps(part_precision(name, args.sentences, rules, layer or None, args.first, args.device)), flush=True)
        if f"draws-{name}" in parts:
            curve = (DRAW_CURVE_DEFAULT, {}) if args.draws_default else (DRAW_CURVE, DEFAULT_0_1)
            print(json.dumps(part_draws(name, args.sentences, *curve, device=args.device)), flush=True)
        if f"coverage-{name}" in parts:
            print(json.dumps(part_coverage(name, args.sentences, rules=coverage_rules)), flush=True)
        if name in parts:
            updates = tuple(args.updates.split(","))
            print(json.dumps(part_model(name, args.sentences, updates)), flush=True)


if __name__ == "__main__":
    main()
