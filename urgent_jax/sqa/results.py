"""Prediction files of Track 2 (REFERENCE.md §1.5): `results.jsonl` and one `<metric>.scp` per metric.

    write_results(out_dir, records)        # results.jsonl + <metric>.scp (+ mos.scp for submission)
    records = read_predictions(path)       # results.jsonl or a <metric>.scp

results.jsonl lines are `{"sample_id", "system_id", "metrics": {name: float}}`; scp lines are
`sample_id value` (4 decimals). The challenge submission is `mos.scp`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from urgent_jax.data.manifest import ManifestError, read_kv, write_kv

RESULTS_FILE = "results.jsonl"


def _fmt(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:.4f}"


def write_results(
    out_dir: str | os.PathLike,
    records: Sequence[Mapping],
    submission_metric: str | None = None,
) -> list[str]:
    """Write results.jsonl (sorted by sample_id, system_id) and `<metric>.scp` per metric; with
    `submission_metric` (a predicted metric other than mos) also write it as the challenge's
    mos.scp. Returns the written file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: (r["sample_id"], r["system_id"]))
    names = list(dict.fromkeys(n for r in records for n in r["metrics"]))
    with open(out / RESULTS_FILE, "w", encoding="utf-8") as f:
        for r in records:
            metrics = {n: round(float(v), 4) for n, v in r["metrics"].items()}
            line = {"sample_id": r["sample_id"], "system_id": r["system_id"], "metrics": metrics}
            f.write(json.dumps(line) + "\n")
    written = [RESULTS_FILE]
    for name in names:
        write_kv(out / f"{name}.scp", {r["sample_id"]: _fmt(float(r["metrics"][name])) for r in records})
        written.append(f"{name}.scp")
    if submission_metric and submission_metric != "mos":
        if submission_metric not in names:
            raise ValueError(f"submission metric {submission_metric!r} is not predicted ({names})")
        write_kv(out / "mos.scp", {r["sample_id"]: _fmt(float(r["metrics"][submission_metric]))
                                   for r in records})
        written.append("mos.scp")
    return written


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Records {"sample_id", "system_id" (None from an scp), "metrics"} from results.jsonl (any
    name ending .jsonl) or from `<metric>.scp` (the metric named by the file stem)."""
    path = os.fspath(path)
    if path.endswith(".jsonl"):
        records = []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    record = {"sample_id": str(obj["sample_id"]), "system_id": obj.get("system_id"),
                              "metrics": {str(k): float(v) for k, v in obj["metrics"].items()}}
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise ManifestError(f"{path}:{line_no}: not a prediction record ({e})") from None
                records.append(record)
        return records
    metric = Path(path).stem
    records = []
    for line_no, (uid, text) in enumerate(read_kv(path).items(), start=1):
        try:
            value = float(text)
        except ValueError:
            raise ManifestError(f"{path}:{line_no}: value {text!r} is not a number") from None
        records.append({"sample_id": uid, "system_id": None, "metrics": {metric: value}})
    return records
