"""Whole datasets: every sentence explained, in shards that survive being killed, on one process or many.

A run folder holds::

    run.json                         what is explained (model fingerprint, layers, settings, σ_S,
                                     the sentences' sha256) and the plan: the rows of each shard
    shards/shard-000012.safetensors  one LayerExplanation per shard, written atomically
    index-rank0.jsonl                one line per finished shard (rows, sha256 of the file,
                                     seconds), appended once the file is in place: the commit

A shard counts as done only when its index line exists and the file's sha256 matches it, so a
run killed at any moment (SIGKILL mid-shard included) resumes from its last whole shard and ends
with exactly the rows of an uninterrupted run. Shards are planned once, from the sentences alone
(sorted by token length so a shard pads little), so the numbers never depend on how many
processes ran them: under ``torchrun`` rank r takes shards r, r + N, ...

    >>> from captum_entropy.runs import plan_shards
    >>> plan_shards([5, 2, 9, 2, 7], shard_size=2)          # rows grouped by length
    [[1, 3], [0, 4], [2]]
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .analysis import LayerExplanation
from .errors import ConvergenceWarning
from ._io import leftover_temp_files, write_text

RUN_FORMAT = "captum_entropy.run/1"
NOT_IDENTITY = ("show_progress", "internal_batch_size")  # display and memory: they never change a number
RUN_FILE = "run.json"
SHARDS = "shards"


def plan_shards(lengths: Sequence[int], shard_size: int, sort_by_length: bool = True) -> list[list[int]]:
    """Row indices in shards of ``shard_size``; with ``sort_by_length`` rows of similar token
    length share a shard (stable: ties keep dataset order), so the batch pads little."""
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i)) if sort_by_length else list(range(len(lengths)))
    return [order[i:i + shard_size] for i in range(0, len(order), shard_size)]


# -- distributed ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rank:
    """This process's place in a run: ``rank`` of ``world_size``; ``device`` its accelerator (or cpu)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")


def rank_device(device: str = "auto") -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` for ``"cuda"`` (or ``"auto"`` with a GPU), else the CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu'")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if cuda else torch.device("cpu")


@contextmanager
def distributed(device: str = "auto", timeout: timedelta = timedelta(hours=24)) -> Iterator[Rank]:
    """This process's :class:`Rank`. Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process
    group (NCCL on CUDA, gloo on CPU) and leaves it at the end; otherwise rank 0 of 1.

    ``device``: ``"auto"`` (this rank's GPU, ``cuda:LOCAL_RANK``, when there is one, else the
    CPU), ``"cpu"`` or ``"cuda"``."""
    dev = rank_device(device)
    cuda = dev.type == "cuda"
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield Rank(0, 1, dev)
        return
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        if cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
    try:
        yield Rank(dist.get_rank(), dist.get_world_size(), dev)
    finally:
        if own:
            dist.destroy_process_group()


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _same_everywhere(identity: dict) -> None:
    """Every rank must explain the same thing (model weights, σ_S, settings, sentences)."""
    dist = _dist()
    if dist is None:
        return
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, identity)
    differ = sorted({k for other in every for k in identity if other.get(k) != identity[k]})
    if differ:
        raise ValueError(f"the processes of this run disagree on {', '.join(differ)}: give every rank the same "
                         "model, σ_S, settings and sentences")


def _agree(rank: int, check) -> Any:
    """Run ``check()`` on rank 0 and give every rank its value (or its ValueError, raised on every rank)."""
    dist = _dist()
    value, error = None, None
    if rank == 0:
        try:
            value = check()
        except Exception as err:  # every rank must hear of it, or the others wait for the plan forever
            error = f"{err}" if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
    if dist is not None:
        box = [(value, error)]
        dist.broadcast_object_list(box, src=0)
        value, error = box[0]
    if error is not None:
        raise ValueError(error)
    return value


# -- the run -------------------------------------------------------------------------------------

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
        "output": explainer.output, "stats": _stats_sha(explainer.stats),
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


def shard_path(out: str | os.PathLike, k: int) -> Path:
    """Where shard ``k`` of the run in ``out`` lives (built from ``k``, never read from a file)."""
    return Path(out) / SHARDS / f"shard-{k:06d}.safetensors"


def _open_run(out: Path, identity: dict, texts: list[str], labels: list[int], make_plan) -> list[list[int]]:
    """The plan of the run in ``out``: read (after checking it is this run) or made and written."""
    path = out / RUN_FILE
    if path.is_file():
        saved = _read_run(path)
        differ = sorted(k for k in identity if saved.get("identity", {}).get(k) != identity[k])
        if differ:
            raise ValueError(f"{out} holds another run (its {', '.join(differ)} differ from this one): resume it "
                             "with the same model, sentences and settings, or choose another out folder")
        return saved["plan"]
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no {RUN_FILE}: choose an empty or new folder")
    plan = make_plan()
    write_text(path, json.dumps({"format": RUN_FORMAT, "identity": identity, "plan": plan, "labels": labels,
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    return plan


def _read_run(path: Path) -> dict:
    """``run.json``, checked: valid JSON in this library's run format."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the run folder was edited: delete it or choose "
                         "another out folder") from None
    if not isinstance(saved, dict) or saved.get("format") != RUN_FORMAT:
        raise ValueError(f"{path.parent} is not a captum_entropy run folder ({path} is not in the format "
                         f"{RUN_FORMAT!r}); choose another out folder")
    return saved


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


def _records(out: Path, plan: list[list[int]]) -> dict[int, set[str]]:
    """Shard -> the sha256 values its index lines name, from every rank's index."""
    records: dict[int, set[str]] = {}
    for index in sorted(out.glob("index-rank*.jsonl")):
        lines = index.read_text(encoding="utf-8").splitlines(keepends=True)
        for n, line in enumerate(lines, start=1):
            if not line.endswith("\n"):
                continue  # a torn last line: the process was killed while appending it
            try:
                rec = json.loads(line)
                k = int(rec["shard"])
                ok = 0 <= k < len(plan) and rec["rows"] == plan[k] and isinstance(rec["sha256"], str)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{index} line {n} is not an index record of this run; it was edited: delete that "
                                 "line and resume the run (its shard is recomputed or re-indexed)")
            records.setdefault(k, set()).add(rec["sha256"])
    return records


def _append(index: Path, record: dict) -> None:
    """One line, written and flushed in one call: a kill leaves at most a torn last line."""
    index.parent.mkdir(parents=True, exist_ok=True)
    with open(index, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _device_of(model: Any) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _lengths(zm: Any, texts: list[str], batch: int = 256) -> list[int]:
    lengths: list[int] = []
    for i in range(0, len(texts), batch):
        _, mask = zm.tokenize(texts[i:i + batch])
        lengths += mask.sum(1).tolist()
    return lengths


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stats_sha(stats: Any) -> str:
    h = hashlib.sha256()
    for name in sorted(stats.std_):
        h.update(name.encode() + stats.std_[name].detach().cpu().double().numpy().tobytes())
    return h.hexdigest()


def _jsonable(settings: dict) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True, default=repr))


# -- reading -------------------------------------------------------------------------------------

class RunResults:
    """The run folder ``out`` as one dataset: which rows are done, the shards, one merged result.

    >>> results = RunResults("out/run")                      # doctest: +SKIP
    >>> results.complete, len(results), results.table().head()   # doctest: +SKIP
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        path = self.out / RUN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{self.out} holds no {RUN_FILE}: not a run folder (start one with "
                                    "`captum-entropy run` or run_dataset)")
        saved = _read_run(path)
        self.identity: dict = saved["identity"]
        self.plan: list[list[int]] = saved["plan"]
        self.labels: list[int] = saved["labels"]
        records = _records(self.out, self.plan)
        self.done = sorted(k for k in records if shard_path(self.out, k).is_file())
        self._records = records

    def __len__(self) -> int:
        """Sentences done."""
        return sum(len(self.plan[k]) for k in self.done)

    def __repr__(self) -> str:
        return (f"RunResults({str(self.out)!r}, model={self.identity['model']!r}, "
                f"{len(self)}/{self.identity['sentences']} sentences, {len(self.done)}/{len(self.plan)} shards)")

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.plan)

    @property
    def missing_rows(self) -> list[int]:
        """Dataset rows not done yet (resume the run to compute them)."""
        done = set(self.done)
        return sorted(i for k, rows in enumerate(self.plan) if k not in done for i in rows)

    def shards(self, verify: bool = True) -> Iterator[tuple[list[int], LayerExplanation]]:
        """``(rows, explanation)`` of every done shard; ``verify`` checks each file's sha256
        against its index line (a file changed after it was written is an error)."""
        for k in self.done:
            path = shard_path(self.out, k)
            if verify and _file_sha(path) not in self._records[k]:
                raise ValueError(f"{path} does not match its index line (sha256): it changed after it was "
                                 "written; delete it and resume the run to recompute it")
            yield self.plan[k], LayerExplanation.load(path)

    def merge(self, allow_partial: bool = False) -> LayerExplanation:
        """Every done sentence in one :class:`LayerExplanation`, in dataset order (their dataset
        rows in ``settings["rows"]``)."""
        if not self.complete and not allow_partial:
            raise ValueError(f"{self!r} is not complete ({len(self.missing_rows)} rows missing): resume the run, "
                             "or pass allow_partial=True")
        if not self.done:
            raise ValueError(f"{self.out} has no finished shard yet")
        rows, parts = zip(*self.shards())
        flat = [i for r in rows for i in r]
        merged = LayerExplanation.concat(list(parts))
        merged = merged.take(sorted(range(len(flat)), key=flat.__getitem__))
        merged.settings = {**merged.settings, "rows": sorted(flat)}  # which dataset rows (a partial merge)
        return merged

    def table(self, unit: str = "nats"):
        """A pandas DataFrame, one row per (sentence, feature, word): the dataset row, its label,
        the prediction, the feature and its depth, the word and its number of pieces (tokens),
        ``entropy_per_dim`` and ``kept_per_dim`` (``unit``/dim, each the mean over the word's
        pieces and dimensions: rank and compare words by these), ``share`` (kept_per_dim over
        the sentence's sum), ``entropy_total`` and ``kept_total`` (``unit``, summed over the
        word's pieces and dimensions), saturation and the feature's convergence."""
        import pandas as pd

        cols: dict[str, list] = {k: [] for k in ("row", "label", "prediction", "probability", "feature", "depth",
                                                 "word_index", "word", "pieces", "entropy_per_dim", "kept_per_dim",
                                                 "share", "entropy_total", "kept_total", "saturated", "converged")}
        for rows, ex in self.shards():
            for b, row in enumerate(rows):
                words, pieces = ex.words(b), ex.word_pieces(b).tolist()
                ent, kept, share, sat = (ex.word_entropy(b, unit), ex.word_kept(b, unit), ex.word_share(b),
                                         ex.word_saturated(b))
                ent_total, kept_total = ex.word_entropy_total(b, unit), ex.word_kept_total(b, unit)
                for f, feature in enumerate(ex.layers):
                    n = len(words)
                    cols["row"] += [row] * n
                    cols["label"] += [self.labels[row]] * n
                    cols["prediction"] += [int(ex.prediction[b])] * n
                    cols["probability"] += [float(ex.probability[b])] * n
                    cols["feature"] += [feature] * n
                    cols["depth"] += [ex.depth[f]] * n
                    cols["word_index"] += list(range(n))
                    cols["word"] += words
                    cols["pieces"] += pieces
                    cols["entropy_per_dim"] += ent[f].tolist()
                    cols["kept_per_dim"] += kept[f].tolist()
                    cols["share"] += share[f].tolist()
                    cols["entropy_total"] += ent_total[f].tolist()
                    cols["kept_total"] += kept_total[f].tolist()
                    cols["saturated"] += sat[f].tolist()
                    cols["converged"] += [bool(ex.converged[f, b])] * n
        return pd.DataFrame(cols).sort_values("row", kind="stable").reset_index(drop=True)
