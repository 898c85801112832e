"""Scaling: wall time and peak memory against batch size, sentence length and internal_batch_size,
and what sorting sentences into length buckets saves.

Workload: the pre-trained all-MiniLM-L6-v2 encoder (``zoo.registry.build("minilm")``: the
checkpoint's encoder, a randomly initialised classifier head; the cost does not depend on
training), noise on ``model.bert.embeddings`` (word + position + segment after LayerNorm), the
feature the **output of encoder block 6** (``model.bert.encoder.layer[5]``, the zoo's ``layer6``,
every token: the whole encoder runs in every noisy forward). σ_S = 1 (``feature_std`` of ones:
the cost does not depend on it). Sentences of exactly N positions ([CLS] + N − 2 word pieces of
the polarity corpus's text, read as one stream at a different offset per sentence + [SEP]).

The work per configuration is fixed: ``max_steps=--steps`` with ``early_stop=False``, so every
sentence takes exactly that many Newton steps (``result.steps`` is checked). Each configuration
is timed twice: the call with those steps, and the same call with ``method="linearized"`` (the
clean forward and the linearised warm start: everything but the steps), so

    set-up = wall(linearized),  per step = (wall(steps) - wall(linearized)) / steps,

and the cost of a default call (at most 100 steps; at layer 6 most sentences take all of them, see
docs/performance.md) is estimated as set-up + 100 × per step.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``,
minus what was allocated before the call (the model and the inputs). On the CPU each
configuration runs in a fresh process (model loaded, one 8-token warm-up call) and the peak is
the growth of the process's high-water mark ``getrusage(RUSAGE_SELF).ru_maxrss`` over the call;
a configuration smaller than the warm-up reads about 0.

Parts (``--parts``):

1. ``grid``: batch size × sentence length; ``× batch 1`` is seconds per sentence against
   batch size 1 at the same length, both measured in this run.
2. ``ibs``: one batch with ``internal_batch_size`` None and smaller: the peak memory bound and
   its time cost.
3. ``buckets``: a mixed-length set (lengths log-uniform between 8 and 128 positions, seeded) in
   shards planned by ``captum_entropy.runs.plan_shards(lengths, shard_size, sort_by_length)``,
   sorted (the default of ``captum-entropy run``) and in dataset order: padding fraction (padded
   positions / all positions) and wall time.

    python benchmarks/scaling.py --json benchmarks/results/scaling_cpu.json              # ~10 min, 2 cores
    python benchmarks/scaling.py --device cuda --json benchmarks/results/scaling_cuda.json
    python benchmarks/scaling.py --quick --json /tmp/scaling.json     # seconds: 8 tokens, layer 1, 1 step, one process
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

from common import timed, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "SCALING_RESULT "
FEATURE = "layer6"
QUICK_FEATURE = "layer1"  # the smoke test only checks that every part runs

# (length, batch sizes) per device; the CPU grid is sized for ~10 minutes on 2 cores
GRIDS = {
    "cpu": {16: (1, 4, 16), 32: (1, 4, 16), 64: (1, 4, 16), 128: (1, 4), 256: (1, 2), 512: (1,)},
    "cuda": {16: (1, 4, 16, 64), 32: (1, 4, 16, 64), 64: (1, 4, 16, 64), 128: (1, 4, 16, 64),
             256: (1, 4, 16), 512: (1, 4, 16)},
    "quick": {8: (1, 2)},
}
# (length, batch, internal_batch_size values); None: the whole batch at once
IBS = {"cpu": (32, 16, (None, 4)), "cuda": (128, 64, (None, 16, 4)), "quick": (8, 2, (None, 1))}
# (sentences, shard_size, shortest, longest)
BUCKETS = {"cpu": (16, 4, 8, 128), "cuda": (64, 16, 8, 128), "quick": (4, 2, 6, 12)}
STEPS = {"cpu": 2, "cuda": 5, "quick": 1}
REPEATS = {"cpu": 1, "cuda": 3, "quick": 1}
DEFAULT_STEPS = 100  # OptimSettings.max_steps: the estimate's step count


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# -- the workload --------------------------------------------------------------------------------

class Workload:
    """The model, the attribution object and a token stream of real text."""

    def __init__(self, device: str, layer: str = FEATURE) -> None:
        _quiet()
        import torch

        from captum_entropy import EntropyAttribution
        from captum_entropy.zoo.registry import build

        self.torch = torch
        self.device = torch.device(device)
        self.zm = build("minilm")  # pre-trained encoder, seeded random head
        self.zm.model.to(self.device)
        tok = self.zm.tokenizer
        self.cls, self.sep, self.pad = tok.cls_token_id, tok.sep_token_id, self.zm.pad_token_id
        self.max_positions = int(self.zm.model.config.max_position_embeddings)
        texts, self.text_source = _texts()
        self.stream = [i for ids in tok(texts, add_special_tokens=False)["input_ids"] for i in ids]
        if layer not in self.zm.layers:
            raise ValueError(f"unknown layer {layer!r}; MiniLM has {list(self.zm.layers)}")
        self.layer = layer
        self.ea = EntropyAttribution(self.zm.forward, self.zm.embedding, target_layer=self.zm.layers[layer])
        hidden = int(self.zm.model.config.hidden_size)
        self.std = torch.ones(hidden, device=self.device)

    def sentence(self, k: int, n: int) -> list[int]:
        """Sentence ``k`` of exactly ``n`` positions: [CLS] + n - 2 word pieces of the stream + [SEP]."""
        if not 3 <= n <= self.max_positions:
            raise ValueError(f"length {n} outside 3..{self.max_positions}")
        start = (k * 7919 + n * 104729) % len(self.stream)
        body = [self.stream[(start + j) % len(self.stream)] for j in range(n - 2)]
        return [self.cls, *body, self.sep]

    def batch(self, lengths: list[int], rows: list[int] | None = None):
        """Token ids padded to the longest, and the attention mask, on the device; sentence ``b``
        is dataset row ``rows[b]`` (default ``b``)."""
        torch = self.torch
        rows = list(range(len(lengths))) if rows is None else rows
        longest = max(lengths)
        ids = torch.full((len(lengths), longest), self.pad, dtype=torch.long)
        mask = torch.zeros((len(lengths), longest), dtype=torch.long)
        for b, (row, n) in enumerate(zip(rows, lengths)):
            ids[b, :n] = torch.tensor(self.sentence(row, n))
            mask[b, :n] = 1
        return ids.to(self.device), mask.to(self.device)

    def explain(self, ids, mask, steps: int, ibs: int | None = None, linearized: bool = False):
        """One ``explain`` call as ``Explainer`` (so ``captum-entropy run``) makes it: the attention
        mask passed to the forward and given as ``mask=`` (so no padding-detection forward)."""
        kw = dict(method="linearized") if linearized else dict(max_steps=steps, early_stop=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unconverged (by design: fixed steps), σ_S notes
            res = self.ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, feature_std=self.std,
                                           internal_batch_size=ibs, seed=0, **kw)
        if not linearized and not bool((res.steps == steps).all()):
            raise RuntimeError(f"expected {steps} steps for every sentence, got {res.steps.tolist()}")
        return res

    def timed(self, fn) -> float:
        return timed(fn, self.device)[1]

    def warm_up(self, steps: int) -> None:
        """Thread pools, the autograd engine, allocator, kernels: one 8-token sentence."""
        ids, mask = self.batch([8])
        self.explain(ids, mask, 1)
        self.explain(ids, mask, steps, linearized=True)


def _texts() -> tuple[list[str], str]:
    try:
        from captum_entropy.zoo import load_polarity

        return [e.text for e in load_polarity("train")], "polarity corpus, train split"
    except Exception as err:  # noqa: BLE001 - offline without the cached corpus: the packaged sentences
        path = ROOT / "captum_entropy" / "data" / "sentences.txt"
        lines = [s for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
        return lines, f"captum_entropy/data/sentences.txt (polarity corpus unavailable: {type(err).__name__})"


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return math.nan


def _maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10  # bytes on macOS, KiB on Linux


# -- one measurement (in this process) -----------------------------------------------------------

def measure_config(w: Workload, length: int, batch: int, ibs: int | None, steps: int, repeats: int) -> dict:
    """Time and peak memory of one (length, batch, internal_batch_size)."""
    torch = w.torch
    ids, mask = w.batch([length] * batch)
    last: dict = {}

    def run() -> None:
        last["result"] = w.explain(ids, mask, steps, ibs)

    def lin() -> None:
        w.explain(ids, mask, steps, ibs, linearized=True)

    gc.collect()
    if w.device.type == "cuda":
        # kernels and cuBLAS workspaces for these shapes first: the peak is reset below anyway
        w.explain(ids, mask, 1, ibs)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(w.device)
        base = torch.cuda.memory_allocated(w.device)
        walls = [w.timed(run)]
        peak = (torch.cuda.max_memory_allocated(w.device) - base) / 2**20
        method, before = "cuda max_memory_allocated - allocated before the call", base / 2**20
    else:
        before, high = _rss_mb(), _maxrss_mb()
        walls = [w.timed(run)]
        peak = _maxrss_mb() - high
        method = "growth of ru_maxrss over the call (fresh process, after an 8-token warm-up)"
    walls += [w.timed(run) for _ in range(repeats - 1)]
    n_samples = int(last.pop("result").settings["n_samples"])  # as the library resolved it for this feature
    lins = [w.timed(lin) for _ in range(repeats)]
    wall, setup = min(walls), min(lins)
    step = max(wall - setup, 0.0) / steps
    return {
        "length": length, "batch": batch, "internal_batch_size": ibs, "steps": steps, "repeats": repeats,
        "wall_s": round(wall, 4), "linearized_s": round(setup, 4), "step_s": round(step, 4),
        "s_per_sentence": round(wall / batch, 4), "setup_s_per_sentence": round(setup / batch, 4),
        "step_s_per_sentence": round(step / batch, 4),
        "est_s_per_sentence_100_steps": round((setup + DEFAULT_STEPS * step) / batch, 3),
        "peak_mb": round(peak, 1), "memory_before_mb": round(before, 1), "memory_method": method,
        "n_samples": n_samples, "text_source": w.text_source,
    }


def measure_buckets(w: Workload, n: int, shard_size: int, lo: int, hi: int, steps: int, seed: int = 0) -> dict:
    """The same mixed-length sentences in shards sorted by length and in dataset order."""
    from captum_entropy.runs import plan_shards

    rng = random.Random(seed)
    lengths = [int(round(math.exp(rng.uniform(math.log(lo), math.log(hi))))) for _ in range(n)]
    plans = {}
    for name, sort in (("sorted", True), ("unsorted", False)):
        shards = plan_shards(lengths, shard_size, sort_by_length=sort)
        if w.device.type == "cuda":  # kernels and cuBLAS plans for these shapes first (the CPU times shards cold)
            for rows in shards:
                w.explain(*w.batch([lengths[i] for i in rows], rows), 1)
        wall, positions, widths = 0.0, 0, []
        for rows in shards:
            ids, mask = w.batch([lengths[i] for i in rows], rows)
            wall += w.timed(lambda: w.explain(ids, mask, steps))
            positions += ids.numel()
            widths.append(int(ids.shape[1]))
        real = sum(lengths)
        plans[name] = {"sort_by_length": sort, "shards": len(shards), "shard_widths": widths,
                       "positions": positions, "padded_positions": positions - real,
                       "padding_fraction": round((positions - real) / positions, 4),
                       "wall_s": round(wall, 4), "s_per_sentence": round(wall / n, 4)}
    s, u = plans["sorted"], plans["unsorted"]
    return {"sentences": n, "shard_size": shard_size, "lengths": lengths, "length_range": [lo, hi],
            "length_distribution": f"log-uniform on [{lo}, {hi}] positions, random.Random({seed})", "steps": steps,
            "text_source": w.text_source, "plans": plans,
            "wall_ratio_sorted_to_unsorted": round(s["wall_s"] / u["wall_s"], 3),
            "positions_ratio_sorted_to_unsorted": round(s["positions"] / u["positions"], 3)}


# -- the worker (CPU: one fresh process per configuration) ---------------------------------------

def worker(job: dict) -> dict:
    import torch

    torch.manual_seed(0)
    w = Workload(job["device"], job["layer"])
    w.warm_up(job["steps"])
    if job["kind"] == "buckets":
        return measure_buckets(w, *job["buckets"], steps=job["steps"])
    return measure_config(w, job["length"], job["batch"], job["internal_batch_size"], job["steps"], job["repeats"])


class Runner:
    """Runs jobs in fresh processes (CPU) or in this one (CUDA, --in-process, --quick)."""

    def __init__(self, device: str, layer: str, steps: int, repeats: int, in_process: bool) -> None:
        self.device, self.layer, self.steps, self.repeats, self.in_process = device, layer, steps, repeats, in_process
        self.w: Workload | None = None

    def __call__(self, job: dict) -> dict:
        job = {"device": self.device, "layer": self.layer, "steps": self.steps, "repeats": self.repeats, **job}
        if self.in_process:
            if self.w is None:
                self.w = Workload(self.device, self.layer)
                self.w.warm_up(self.steps)
            if job["kind"] == "buckets":
                return measure_buckets(self.w, *job["buckets"], steps=self.steps)
            return measure_config(self.w, job["length"], job["batch"], job["internal_batch_size"], self.steps,
                                  self.repeats)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"worker {job} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(lines[-1][len(RESULT_TAG):])


# -- the tables ----------------------------------------------------------------------------------

def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def add_ratios(rows: list[dict], ibs_rows: list[dict]) -> None:
    """``vs_batch1``: seconds per sentence against batch size 1 at the same length (same run);
    for the internal_batch_size rows also time and memory against internal_batch_size None."""
    one = {r["length"]: r for r in rows if r["batch"] == 1 and r["internal_batch_size"] is None}
    for r in rows + ibs_rows:
        b1 = one.get(r["length"])
        r["vs_batch1"] = round(r["s_per_sentence"] / b1["s_per_sentence"], 3) if b1 else None
    whole = next((r for r in ibs_rows if r["internal_batch_size"] is None), None)
    for r in ibs_rows:
        r["time_vs_whole_batch"] = round(r["wall_s"] / whole["wall_s"], 3) if whole else None
        r["peak_vs_whole_batch"] = (round(r["peak_mb"] / whole["peak_mb"], 3)
                                    if whole and whole["peak_mb"] > 0 else None)


def tables(out: dict) -> str:
    meta = out["meta"]
    k = meta["steps"]
    parts = [f"{meta['device_name']}, torch {meta['torch']}, {meta['threads']} threads; feature {meta['feature']}; "
             f"{k} Newton step(s) × {meta['n_samples']} draws per sentence, early stop off; peak memory: "
             f"{meta['memory_method']}."]
    if out["grid"]:
        parts += ["", "| tokens | batch | wall (s) | s / sentence | × batch 1 | set-up s / sentence | "
                  "step s / sentence | est. s / sentence at 100 steps | peak memory (MB) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in out["grid"]:
            parts.append(f"| {r['length']} | {r['batch']} | {_fmt(r['wall_s'])} | {_fmt(r['s_per_sentence'])} | "
                         f"{_fmt(r['vs_batch1'])} | {_fmt(r['setup_s_per_sentence'])} | "
                         f"{_fmt(r['step_s_per_sentence'])} | {_fmt(r['est_s_per_sentence_100_steps'])} | "
                         f"{_fmt(r['peak_mb'], 4)} |")
    if out["internal_batch_size"]:
        parts += ["", "| tokens | batch | internal_batch_size | wall (s) | s / sentence | time × whole batch | "
                  "peak memory (MB) | memory × whole batch |", "|---|---|---|---|---|---|---|---|"]
        for r in out["internal_batch_size"]:
            parts.append(f"| {r['length']} | {r['batch']} | {_fmt(r['internal_batch_size'])} | {_fmt(r['wall_s'])} | "
                         f"{_fmt(r['s_per_sentence'])} | {_fmt(r['time_vs_whole_batch'])} | "
                         f"{_fmt(r['peak_mb'], 4)} | {_fmt(r['peak_vs_whole_batch'])} |")
    bk = out["buckets"]
    if bk:
        parts += ["", f"{bk['sentences']} sentences, {bk['length_distribution']}, shards of {bk['shard_size']}:", "",
                  "| shards planned | shard widths (positions) | positions | padded | padding fraction | wall (s) | "
                  "s / sentence | wall × dataset order |", "|---|---|---|---|---|---|---|---|"]
        u = bk["plans"]["unsorted"]["wall_s"]
        for name, label in (("sorted", "sorted by length (default)"), ("unsorted", "dataset order (`--no-sort`)")):
            p = bk["plans"][name]
            parts.append(f"| {label} | {', '.join(map(str, p['shard_widths']))} | {p['positions']} | "
                         f"{p['padded_positions']} | {_fmt(p['padding_fraction'])} | {_fmt(p['wall_s'])} | "
                         f"{_fmt(p['s_per_sentence'])} | {_fmt(p['wall_s'] / u)} |")
    return "\n".join(parts)


# -- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny grid, 1 step, in this process (the smoke test)")
    ap.add_argument("--json", help="write every row here")
    ap.add_argument("--parts", default="grid,ibs,buckets", help="comma-separated: grid, ibs, buckets")
    ap.add_argument("--steps", type=int, help="Newton steps per configuration (default: cpu 2, cuda 5, quick 1)")
    ap.add_argument("--repeats", type=int, help="timed calls per configuration, the fastest kept (cpu 1, cuda 3)")
    ap.add_argument("--lengths", help="only these lengths of the grid, e.g. 16,64")
    ap.add_argument("--layer", help=f"the feature: a zoo layer name (default {FEATURE}; --quick: {QUICK_FEATURE})")
    ap.add_argument("--in-process", action="store_true", help="CPU: one process for all configurations (peak "
                    "memory then grows over the earlier ones' high-water mark; timing only)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps(worker(json.loads(args.worker))), flush=True)
        return None

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")
    grid_key = "quick" if args.quick else args.device
    steps = args.steps or STEPS[grid_key]
    repeats = args.repeats or REPEATS[grid_key]
    if steps < 1 or repeats < 1:
        ap.error("--steps and --repeats must be at least 1")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if parts - {"grid", "ibs", "buckets"}:
        ap.error(f"unknown part(s) {sorted(parts - {'grid', 'ibs', 'buckets'})}")
    in_process = args.quick or args.in_process or args.device == "cuda"
    only = {int(x) for x in args.lengths.split(",")} if args.lengths else None

    jobs: list[tuple[str, dict]] = []
    if "grid" in parts:
        for length, batches in GRIDS[grid_key].items():
            if only is None or length in only:
                jobs += [("grid", {"kind": "config", "length": length, "batch": b, "internal_batch_size": None})
                         for b in batches]
    if "ibs" in parts:
        length, batch, values = IBS[grid_key]
        jobs += [("ibs", {"kind": "config", "length": length, "batch": batch, "internal_batch_size": v})
                 for v in values]
    if "buckets" in parts:
        jobs.append(("buckets", {"kind": "buckets", "buckets": list(BUCKETS[grid_key])}))

    layer = args.layer or (QUICK_FEATURE if args.quick else FEATURE)
    runner = Runner(args.device, layer, steps, repeats, in_process)
    done: dict[tuple, dict] = {}
    out: dict = {"grid": [], "internal_batch_size": [], "buckets": None}
    start = time.perf_counter()
    print(f"{len(jobs)} measurements, {steps} step(s) each, {'one process' if in_process else 'a fresh process each'}",
          flush=True)
    for n, (part, job) in enumerate(jobs, start=1):
        key = tuple(sorted((k, str(v)) for k, v in job.items()))
        if key not in done:  # the whole-batch ibs row is the grid's row when the grid has it
            done[key] = runner(job)
        row = done[key]
        took = time.perf_counter() - start
        if part == "buckets":
            s, u = row["plans"]["sorted"], row["plans"]["unsorted"]
            print(f"[{n}/{len(jobs)}] buckets: sorted {s['wall_s']:.2f} s (padding {s['padding_fraction']:.0%}), "
                  f"dataset order {u['wall_s']:.2f} s (padding {u['padding_fraction']:.0%})  [{took:.0f} s]",
                  flush=True)
            out["buckets"] = row
            continue
        print(f"[{n}/{len(jobs)}] {part}: {row['length']} tokens × {row['batch']}, internal_batch_size "
              f"{row['internal_batch_size']}: {row['wall_s']:.2f} s (set-up {row['linearized_s']:.2f} s, "
              f"step {row['step_s']:.2f} s), peak {row['peak_mb']:.0f} MB  [{took:.0f} s]", flush=True)
        out["grid" if part == "grid" else "internal_batch_size"].append(dict(row))
    add_ratios(out["grid"], out["internal_batch_size"])

    dev = torch.device(args.device)
    rows = out["grid"] + out["internal_batch_size"]
    mem = next((r["memory_method"] for r in rows), None)
    source = next((r["text_source"] for r in rows + ([out["buckets"]] if out["buckets"] else [])), "–")
    if mem and in_process and args.device == "cpu":
        mem = ("growth of ru_maxrss over the call, all configurations in one process "
               "(--quick/--in-process: a lower bound)")
    import transformers

    out["meta"] = {
        "device": args.device, "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if dev.type == "cuda" else None,
        "model": "all-MiniLM-L6-v2 (pre-trained encoder, random classifier head), float32",
        "noise_on": "model.bert.embeddings output", "feature": f"{layer} output, every token",
        "feature_std": "ones", "n_samples": next((r["n_samples"] for r in rows), None), "steps": steps,
        "repeats": repeats, "early_stop": False,
        "default_steps_for_estimate": DEFAULT_STEPS, "quick": args.quick, "in_process": in_process,
        "memory_method": mem or "–", "text_source": source,
        "total_s": round(time.perf_counter() - start, 1),
        "command": " ".join(["python", "benchmarks/scaling.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    out = {"meta": out.pop("meta"), **out}
    print()
    print(tables(out))
    if args.json:
        write_json(args.json, out)
        print(f"\nwrote {args.json}")
    return out


if __name__ == "__main__":
    main()
