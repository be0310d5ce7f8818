"""Ratings -> one prepared split directory (REFERENCE.md §1.5), as the official csv2data step:

    wav.scp (uid path), utt2sys (uid system), utt2dur (uid seconds, 3 decimals, from the audio
    header), <metric>.scp (uid value, 4 decimals, `nan` when missing) and data.jsonl.

Aggregation (the official csv2scps): ratings are grouped by audio path in first-seen order; the
first rating of a path gives its sample_id and system_id; when the corpus has listener scores,
`mos` is the mean of the scores of that path; other metrics come from its first rating. Two paths
with one sample_id are an error naming both rows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from urgent_jax.audio.io import AudioFileError, audio_info
from urgent_jax.sqa.data import write_jsonl
from urgent_jax.sqa.prepare.tables import PrepareError

# Metric columns taken from corpus tables (the official csv2scps list; REFERENCE.md §1.5).
METRIC_NAMES = (
    "mos", "dnsmos_ovrl", "scoreq", "utmos", "nisqa_mos", "distill_mos", "sigmos_ovrl",
    "sigmos_col", "sigmos_disc", "sigmos_loud", "sigmos_reverb", "sigmos_sig", "sigmos_noise",
    "lps", "spksim", "sbert", "mcd", "sdr", "pesq", "pesqc2", "lsd", "estoi",
)  # fmt: skip


class Rating(NamedTuple):
    """One table row: an opinion score (score) and/or metric values of one audio file."""

    wav_path: str
    system_id: str
    sample_id: str
    score: float | None  # one listener's (or the file's) opinion score; None: no score column
    metrics: dict[str, float]  # metric name -> value (NaN when the cell is empty)
    where: str  # "file:line" of the row, for error messages


class Item(NamedTuple):
    wav_path: str
    system_id: str
    sample_id: str
    metrics: dict[str, float]
    where: str


def aggregate(ratings: Sequence[Rating]) -> list[Item]:
    """One item per audio path (module docstring), sorted by sample_id."""
    groups: dict[str, list[Rating]] = {}
    for r in ratings:
        groups.setdefault(r.wav_path, []).append(r)
    has_scores = any(r.score is not None for r in ratings)
    items, first_path = [], {}
    for path, group in groups.items():
        head = group[0]
        if head.sample_id in first_path:
            other = groups[first_path[head.sample_id]][0]
            raise PrepareError(f"{head.where}: duplicate sample_id {head.sample_id!r} for "
                               f"{path} and {other.wav_path} ({other.where})")  # fmt: skip
        first_path[head.sample_id] = path
        metrics = dict(head.metrics)
        if has_scores:
            scores = [r.score for r in group if r.score is not None]
            metrics["mos"] = sum(scores) / len(scores) if scores else math.nan
        items.append(Item(path, head.system_id, head.sample_id, metrics, head.where))
    return sorted(items, key=lambda item: item.sample_id)


def _check_token(text: str, what: str, where: str) -> str:
    if not text or any(ch.isspace() for ch in text):
        raise PrepareError(f"{where}: {what} {text!r} is empty or has whitespace (scp format)")
    return text


def write_split(ratings: Sequence[Rating], out_dir: str | os.PathLike) -> list[dict]:
    """Write the split directory from ratings; returns the data.jsonl records."""
    items = aggregate(ratings)
    if not items:
        raise PrepareError(f"{out_dir}: no rated audio file found for this split")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [m for m in METRIC_NAMES if any(m in item.metrics for item in items)]
    records, lines = [], {"wav.scp": [], "utt2sys": [], "utt2dur": []}
    lines.update({f"{m}.scp": [] for m in names})
    for item in items:
        uid = _check_token(item.sample_id, "sample_id", item.where)
        path = _check_token(os.path.abspath(item.wav_path), "audio path", item.where)
        system = _check_token(item.system_id, "system_id", item.where)
        try:
            fs, frames, _ = audio_info(path)
        except AudioFileError as e:
            raise PrepareError(f"{item.where}: {e}") from None
        duration = f"{frames / fs:.3f}"
        values = {m: f"{item.metrics.get(m, math.nan):.4f}" for m in names}
        lines["wav.scp"].append(f"{uid} {path}\n")
        lines["utt2sys"].append(f"{uid} {system}\n")
        lines["utt2dur"].append(f"{uid} {duration}\n")
        for m in names:
            lines[f"{m}.scp"].append(f"{uid} {values[m]}\n")
        records.append({"audio_path": path, "system_id": system, "sample_id": uid,
                        "duration": float(duration),
                        "metrics": {m: float(v) for m, v in values.items()}})  # fmt: skip
    for name, content in lines.items():
        (out_dir / name).write_text("".join(content))
    write_jsonl(out_dir / "data.jsonl", records)
    return records
