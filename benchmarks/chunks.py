"""Resumable benchmark chunks: files named ``{prefix}-{start:04d}-{end:04d}{suffix}`` under a work folder."""

from __future__ import annotations

from pathlib import Path


def chunk_path(work: Path, prefix: str, start: int, end: int, suffix: str) -> Path:
    """The name holds both ends: a rerun with other counts never takes a shorter chunk for a full one."""
    return work / f"{prefix}-{start:04d}-{end:04d}{suffix}"


def covering(work: Path, prefix: str, suffix: str) -> list[Path]:
    """The chunks that cover items 0, 1, … without gap or overlap (the longest at each start)."""
    chunks: dict[int, tuple[int, Path]] = {}
    for p in work.glob(f"{prefix}-[0-9]*-[0-9]*{suffix}"):
        start, end = (int(x) for x in p.name[len(prefix) + 1:-len(suffix)].split("-"))
        if end > chunks.get(start, (0, p))[0]:
            chunks[start] = (end, p)
    out, covered = [], 0
    while covered in chunks:
        end, p = chunks[covered]
        out.append(p)
        covered = end
    return out
