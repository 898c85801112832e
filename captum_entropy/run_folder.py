"""The run folder's format, shared by the writer (:mod:`.runs`) and the reader (:mod:`.run_results`).

A run folder holds::

    run.json                         what is explained (model fingerprint, layers, settings, σ_S,
                                     the sentences' sha256) and the plan: the rows of each shard
    shards/shard-000012.safetensors  one LayerExplanation per shard, written atomically
    index-rank0.jsonl                one line per finished shard (rows, sha256 of the file,
                                     seconds), appended once the file is in place: the commit

Shards are planned once, from the sentences alone (sorted by token length so a shard pads little):

    >>> from captum_entropy.runs import plan_shards
    >>> plan_shards([5, 2, 9, 2, 7], shard_size=2)          # rows grouped by length
    [[1, 3], [0, 4], [2]]
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

RUN_FORMAT = "captum_entropy.run/1"
RUN_FILE = "run.json"
SHARDS = "shards"


def plan_shards(lengths: Sequence[int], shard_size: int, sort_by_length: bool = True) -> list[list[int]]:
    """Row indices in shards of ``shard_size``; with ``sort_by_length`` rows of similar token
    length share a shard (stable: ties keep dataset order), so the batch pads little."""
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i)) if sort_by_length else list(range(len(lengths)))
    return [order[i:i + shard_size] for i in range(0, len(order), shard_size)]


def shard_path(out: str | os.PathLike, k: int) -> Path:
    """Where shard ``k`` of the run in ``out`` lives (built from ``k``, never read from a file)."""
    return Path(out) / SHARDS / f"shard-{k:06d}.safetensors"


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


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
