"""Prediction files of Track 2 (REFERENCE.md §1.5): `results.jsonl` and one `<metric>.scp` per metric.

    write_results(out_dir, records)        # results.jsonl + <metric>.scp (+ mos.scp for submission)
    records = read_predictions(path)       # results.jsonl or a <metric>.scp

results.jsonl lines are `{"sample_id", "system_id", "metrics": {name: float}}`, one per
(sample_id, system_id); scp lines are `sample_id value` (4 decimals), keyed by sample_id alone
(§1.5), so records that share a sample_id across systems cannot be written (ValueError; rename the
sample ids, e.g. `<system>-<id>` as build_dataset does). The challenge submission is `mos.scp`:
the model's own `mos` prediction, or for a model that predicts no `mos` the metric named by
`submission_metric`.
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


def check_unique_sample_ids(records: Sequence[Mapping], what: str = "records") -> None:
    """ValueError unless every record has its own sample_id: `<metric>.scp` and the submission's
    mos.scp are keyed by sample_id alone, so a second record would overwrite the first."""
    systems: dict[str, str] = {}
    for r in records:
        sample_id, system_id = r["sample_id"], r["system_id"]
        if sample_id not in systems:
            systems[sample_id] = system_id
        elif systems[sample_id] == system_id:
            raise ValueError(f"{what}: duplicate (sample_id, system_id) ({sample_id!r}, "
                             f"{system_id!r})")  # fmt: skip
        else:
            raise ValueError(f"{what}: sample_id {sample_id!r} occurs for systems "
                             f"{systems[sample_id]!r} and {system_id!r}; <metric>.scp files are "
                             "keyed by sample_id alone (REFERENCE.md §1.5), so the sample ids "
                             "must be unique across systems")  # fmt: skip


def submission_source(names: Sequence[str], submission_metric: str | None) -> str | None:
    """The predicted metric written as the submission's mos.scp, checked against `names`.

    None: none chosen (only `<metric>.scp` files, which include mos.scp when mos is predicted).
    "mos": the model's mos (it must predict one). Another name X: only for a model without a mos
    output (its mos.scp would otherwise hold two different things); X must be predicted.
    """
    if submission_metric is None:
        return None
    if submission_metric not in names:
        raise ValueError(f"submission metric {submission_metric!r} is not predicted by the model "
                         f"(it predicts {list(names)})")  # fmt: skip
    if submission_metric != "mos" and "mos" in names:
        raise ValueError(f"the model predicts mos, so mos.scp (the submission) holds its mos; "
                         f"submission metric {submission_metric!r} would overwrite it (its values "
                         f"are in {submission_metric}.scp)")  # fmt: skip
    return submission_metric


def write_results(
    out_dir: str | os.PathLike,
    records: Sequence[Mapping],
    submission_metric: str | None = None,
) -> list[str]:
    """Write results.jsonl (sorted by sample_id, system_id) and `<metric>.scp` per metric; with
    `submission_metric` also the challenge's mos.scp (see `submission_source`: the model's mos,
    or for a model without mos the named metric). Records need unique sample ids
    (`check_unique_sample_ids`). Returns the written file names, each once."""
    check_unique_sample_ids(records)
    records = sorted(records, key=lambda r: (r["sample_id"], r["system_id"]))
    names = list(dict.fromkeys(n for r in records for n in r["metrics"]))
    submission = submission_source(names, submission_metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / RESULTS_FILE, "w", encoding="utf-8") as f:
        for r in records:
            metrics = {n: round(float(v), 4) for n, v in r["metrics"].items()}
            line = {"sample_id": r["sample_id"], "system_id": r["system_id"], "metrics": metrics}
            f.write(json.dumps(line) + "\n")
    written = [RESULTS_FILE]
    for name in names:
        write_kv(out / f"{name}.scp", {r["sample_id"]: _fmt(float(r["metrics"][name])) for r in records})
        written.append(f"{name}.scp")
    if submission is not None and submission != "mos":  # mos.scp of a model without mos
        write_kv(out / "mos.scp", {r["sample_id"]: _fmt(float(r["metrics"][submission]))
                                   for r in records})  # fmt: skip
        written.append("mos.scp")
    return written


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Records {"sample_id", "system_id" (None from an scp), "metrics"} from results.jsonl (any
    name ending .jsonl) or from `<metric>.scp` (the metric named by the file stem). A repeated
    (sample_id, system_id) line, like a repeated scp id, is a ManifestError naming path:line."""
    path = os.fspath(path)
    if path.endswith(".jsonl"):
        records, first_line = [], {}
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
                key = (record["sample_id"], record["system_id"])
                if key in first_line:  # counted twice in every statistic otherwise
                    raise ManifestError(f"{path}:{line_no}: duplicate (sample_id, system_id) "
                                        f"{key} (first on line {first_line[key]})")  # fmt: skip
                first_line[key] = line_no
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
