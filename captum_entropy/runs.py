"""Whole datasets: every sentence explained into a run folder, in shards that survive being killed,
on one process or many.

A shard counts as done only when its index line exists and the file's sha256 matches it, so a
run killed at any moment (SIGKILL mid-shard included) resumes from its last whole shard and ends
with exactly the rows of an uninterrupted run. Shards are planned once, from the sentences alone,
so the numbers never depend on how many processes ran them: under ``torchrun`` rank r takes
shards r, r + N, ... The folder's format is :mod:`.run_folder`, the processes :mod:`.ranks`, the
reader :mod:`.run_results`; their public names are importable from here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from . import __version__
from .analysis import LayerExplanation
from .errors import ConvergenceWarning
from ._io import leftover_temp_files, write_text
from .ranks import Rank, _agree, _dist, _same_everywhere, distributed, rank_device
from .run_folder import (RUN_FILE, RUN_FORMAT, SHARDS, _append, _file_sha, _read_run, _records, _sha, plan_shards,
                         shard_path)
from .run_results import RunResults

__all__ = ["RUN_FILE", "RUN_FORMAT", "SHARDS", "Rank", "RunResults", "distributed", "plan_shards", "rank_device",
           "run_dataset", "shard_path"]

NOT_IDENTITY = ("show_progress", "internal_batch_size")  # display and memory: they never change a number


def run_dataset(explainer: Any, texts: Sequence[str], out: str | os.PathLike, labels: Sequence[int] | None = None,
                shard_size: int = 16, sort_by_length: bool = True, progress: bool = True,
                rank: Rank | None = None) -> "RunResults | None":
    """Explain every sentence of ``texts`` with ``explainer`` (an :class:`~captum_entropy.Explainer`)
    into the run folder ``out``; a folder holding part of the same run is resumed, one holding
    another run is an error. Under ``torchrun`` each rank computes its own shards (``rank``: the
    :class:`Rank` from :func:`distributed`; by default that of an initialised process group, else
    rank 0 of 1; a CUDA rank's model is moved to its GPU). Returns the folder's
    :class:`RunResults` (``None`` on a node whose folder lacks ``run.json``: no shared filesystem).

    Args:
        explainer: what to explain with (model, layers, σ_S, settings); every rank needs the same.
        texts, labels: the dataset (labels: class indices, kept in the table; ``None``: -1).
        shard_size: sentences per shard, which is also the batch the optimiser runs together.
        sort_by_length: plan shards of similar token length (less padding; a sentence's numbers do not
            depend on its batch-mates beyond the optimiser's batching tolerance, 1e-5).
    """
    from .explainer import check_texts, fingerprint

    texts = check_texts(texts)
    labels = [-1] * len(texts) if labels is None else [int(x) for x in labels]
    if len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels for {len(texts)} sentences")
    if rank is None:  # a process group the caller started counts; else one process
        dist = _dist()
        rank = Rank(dist.get_rank(), dist.get_world_size()) if dist is not None else Rank()
    if rank.world_size > 1 and _dist() is None:
        raise ValueError(f"{rank} without a process group: start the processes with torchrun (or call "
                         "torch.distributed.init_process_group first, e.g. inside runs.distributed())")
    out = Path(out)
    zm = explainer.zoo_model
    if rank.device.type == "cuda" and _device_of(zm.model) != rank.device:
        zm.model.to(rank.device)  # this rank's GPU
    identity = {
        "model": zm.name, "weights": fingerprint(zm.model), "layers": list(explainer.layers),
        "version": __version__,  # a release may change the estimator: never resume across one
        "output": explainer.output, "stats": _stats_sha(explainer.feature_std),
        "settings": _jsonable({k: v for k, v in explainer.settings.items() if k not in NOT_IDENTITY}),
        "device": _device_of(zm.model).type,  # CPU and CUDA draw different noise: a resume keeps to one
        "sentences": len(texts), "texts_sha256": _sha(json.dumps([texts, labels])),
        "shard_size": shard_size, "sort_by_length": sort_by_length,
    }

    def open_run() -> list[list[int]]:
        return _open_run(out, identity, texts, labels, lambda: plan_shards(_lengths(zm, texts), shard_size,
                                                                            sort_by_length))

    _same_everywhere(identity)
    plan = _agree(rank.rank, open_run)  # rank 0 reads or writes run.json; every rank gets the plan
    mine = [k for k in range(len(plan)) if k % rank.world_size == rank.rank]
    index = out / f"index-rank{rank.rank}.jsonl"
    done = _recover(out, plan, mine, index, texts)
    todo = [k for k in mine if k not in done]
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(len(plan[k]) for k in mine), initial=sum(len(plan[k]) for k in mine if k in done),
               unit="sentence", desc=f"{zm.name} rank {rank.rank}/{rank.world_size}" if rank.world_size > 1 else zm.name,
               disable=not progress or rank.rank != 0)
    unconverged = 0
    try:
        for k in todo:
            t = time.perf_counter()
            with warnings.catch_warnings():  # one summary at the end instead of a warning per shard
                warnings.simplefilter("ignore", ConvergenceWarning)
                ex = explainer([texts[i] for i in plan[k]], show_progress=False)
            unconverged += int((~ex.converged).sum())
            path = shard_path(out, k)
            ex.save(path)  # atomic: a temporary file renamed into place
            _append(index, {"shard": k, "rows": plan[k], "sha256": _file_sha(path),
                            "seconds": round(time.perf_counter() - t, 3), "rank": rank.rank,
                            "world_size": rank.world_size})
            bar.update(len(plan[k]))
    finally:
        bar.close()
    if unconverged:
        pairs = sum(len(plan[k]) for k in todo) * (len(explainer.layers) + explainer.output)
        warnings.warn(f"{unconverged} of {pairs} (sentence, feature) pairs computed by rank {rank.rank} did not "
                      "converge: raise max_steps or n_samples, or filter on the table's `converged` column",
                      ConvergenceWarning, stacklevel=2)
    dist = _dist()
    if dist is not None:
        dist.barrier()
    # on a node without a shared filesystem only rank 0's folder holds run.json
    return RunResults(out) if (out / RUN_FILE).is_file() else None


def _open_run(out: Path, identity: dict, texts: list[str], labels: list[int], make_plan) -> list[list[int]]:
    """The plan of the run in ``out``: read (after checking it is this run) or made and written."""
    path = out / RUN_FILE
    if path.is_file():
        saved = _read_run(path)
        differ = sorted(k for k in identity if saved.get("identity", {}).get(k) != identity[k])
        if differ:
            raise ValueError(f"{out} holds another run (its {', '.join(differ)} differ from this one): resume it "
                             "with the same model, sentences, settings and captum_entropy version, or choose another "
                             "out folder")
        return saved["plan"]
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no {RUN_FILE}: choose an empty or new folder")
    plan = make_plan()
    write_text(path, json.dumps({"format": RUN_FORMAT, "identity": identity, "plan": plan, "labels": labels,
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    return plan


def _recover(out: Path, plan: list[list[int]], mine: list[int], index: Path, texts: list[str]) -> set[int]:
    """The shards of ``mine`` already done. Mends what a kill leaves: a torn last index line, a
    temporary file, a shard file in place whose index line was never written (re-indexed after
    checking it holds its rows' sentences). A file that no longer matches its index line is
    deleted and recomputed."""
    records = _records(out, plan)
    if index.is_file():  # keep only whole lines, so the next append starts a fresh one
        whole = [line for line in index.read_text(encoding="utf-8").splitlines(keepends=True) if line.endswith("\n")]
        write_text(index, "".join(whole))
    done = set()
    for k in mine:
        path = shard_path(out, k)
        for tmp in leftover_temp_files(path):
            tmp.unlink(missing_ok=True)
        if not path.is_file():
            continue
        sha = _file_sha(path)
        if sha in records.get(k, set()):
            done.add(k)
            continue
        if k in records:  # committed once, changed since (edited, or cut by a power loss): recompute it
            path.unlink()
            continue
        try:
            ex = LayerExplanation.load(path)
        except ValueError:
            path.unlink()
            continue
        if ex.texts == [texts[i] for i in plan[k]]:
            _append(index, {"shard": k, "rows": plan[k], "sha256": sha, "reindexed": True})
            done.add(k)
        else:
            path.unlink()
    return done


def _device_of(model: Any) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _lengths(zm: Any, texts: list[str], batch: int = 256) -> list[int]:
    lengths: list[int] = []
    for i in range(0, len(texts), batch):
        _, mask = zm.tokenize(texts[i:i + batch])
        lengths += mask.sum(1).tolist()
    return lengths


def _stats_sha(stats: Any) -> str:
    h = hashlib.sha256()
    for name in sorted(stats.std_):
        h.update(name.encode() + stats.std_[name].detach().cpu().double().numpy().tobytes())
    return h.hexdigest()


def _jsonable(settings: dict) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True, default=repr))
