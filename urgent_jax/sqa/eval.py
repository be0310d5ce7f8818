"""Track 2 evaluation (REFERENCE.md §4.5): agreement of predicted and reference scores.

    python -m urgent_jax.sqa.eval --pred exp/sqa/infer/results.jsonl \
        --ref data/chime-7-udase-eval/test/data.jsonl [--pred-metric mos] \
        [--pred-metric dnsmos_ovrl:mos] [--output result.json]

--pred is a results.jsonl (from `python -m urgent_jax.sqa.infer`) or a `<metric>.scp` (mos.scp, the
submission file); --ref is a Track 2 data.jsonl. Predictions join the references on (sample_id,
system_id) — on sample_id alone for an scp — and a prediction without a reference is an error.
--pred-metric NAME compares predicted NAME with reference NAME; NAME:REF compares it with reference
REF (each prediction name at most once per run). Default: every metric present on both sides. Per metric, utterance level uses all pairs and
system level the per-system means; each reports MSE, LCC, SRCC and KTAU. Pairs with a NaN are left
out (their count is printed). The JSON is {"utterance": {...}, "system": {...}} for one metric and
{metric: {"utterance": ..., "system": ...}} for several.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from collections.abc import Sequence

import numpy as np

from urgent_jax.metrics.correlation import STAT_NAMES, utterance_and_system_stats
from urgent_jax.sqa.data import read_jsonl
from urgent_jax.sqa.results import read_predictions

log = logging.getLogger(__name__)


def parse_metric_pairs(values: Sequence[str] | None) -> list[tuple[str, str]]:
    """`pred[:ref]` strings -> [(pred_name, ref_name)]. Results are keyed by the prediction name,
    so naming one prediction twice (e.g. `mos` and `mos:dnsmos_ovrl`) is a ValueError."""
    pairs, first = [], {}
    for item in values or ():
        for part in item.split(","):
            pred, _, ref = part.strip().partition(":")
            if not pred:
                raise ValueError(f"--pred-metric expects NAME or NAME:REF, got {item!r}")
            if pred in first:
                raise ValueError(f"--pred-metric names prediction {pred!r} twice ({first[pred]!r} "
                                 f"and {part.strip()!r}); compare it with one reference per run")
            first[pred] = part.strip()
            pairs.append((pred, ref or pred))
    return pairs


def join(predictions: list[dict], references: list[dict]) -> tuple[list[dict], list[dict]]:
    """Pair every prediction with its reference record; a missing reference raises KeyError."""
    by_key = {(r["sample_id"], r["system_id"]): r for r in references}
    by_sample: dict[str, list[dict]] = {}
    for r in references:
        by_sample.setdefault(r["sample_id"], []).append(r)
    preds, refs = [], []
    for p in predictions:
        if p["system_id"] is None:
            candidates = by_sample.get(p["sample_id"], [])
            if len(candidates) > 1:
                raise KeyError(f"sample_id {p['sample_id']!r} has {len(candidates)} systems in the "
                               "reference; predictions need a system_id (use results.jsonl)")
            ref = candidates[0] if candidates else None
        else:
            ref = by_key.get((p["sample_id"], p["system_id"]))
        if ref is None:
            system = "" if p["system_id"] is None else f", system_id {p['system_id']!r}"
            raise KeyError(f"no reference for sample_id {p['sample_id']!r}{system}")
        preds.append(p)
        refs.append(ref)
    return preds, refs


def evaluate(
    predictions: list[dict], references: list[dict], metric_pairs: Sequence[tuple[str, str]] = ()
) -> dict[str, dict]:
    """{pred_metric: {"utterance": stats, "system": stats}} (stats: MSE, LCC, SRCC, KTAU,
    num_pairs, num_dropped). Pairs are sorted by sample_id, systems by system_id."""
    counts = collections.Counter(pred for pred, _ in metric_pairs)
    repeated = sorted(name for name, n in counts.items() if n > 1)
    if repeated:  # results are keyed by the prediction name
        raise ValueError(f"prediction metric(s) {repeated} named more than once in "
                         f"{list(metric_pairs)}")  # fmt: skip
    if not predictions or not references:
        empty = "predictions" if not predictions else "references"
        raise ValueError(f"no {empty} to evaluate (empty file)")
    preds, refs = join(predictions, references)
    order = np.argsort([p["sample_id"] for p in preds], kind="stable")
    preds = [preds[i] for i in order]
    refs = [refs[i] for i in order]
    if not metric_pairs:
        pred_names = dict.fromkeys(n for p in preds for n in p["metrics"])
        ref_names = {n for r in refs for n in r["metrics"]}
        metric_pairs = [(n, n) for n in pred_names if n in ref_names]
        if not metric_pairs:
            raise ValueError("predictions and references share no metric; name one with --pred-metric")
    if len(refs) < len(references):
        log.warning("%d reference records have no prediction", len(references) - len(refs))
    results = {}
    for pred_name, ref_name in metric_pairs:
        p = np.array([x["metrics"].get(pred_name, np.nan) for x in preds], np.float64)
        r = np.array([x["metrics"].get(ref_name, np.nan) for x in refs], np.float64)
        if np.all(np.isnan(p)):
            raise ValueError(f"no prediction has metric {pred_name!r}")
        if np.all(np.isnan(r)):
            raise ValueError(f"no reference has metric {ref_name!r}")
        systems = [x["system_id"] for x in refs]
        utt, sys_ = utterance_and_system_stats(p, r, systems)
        results[pred_name] = {"utterance": utt, "system": sys_, "reference_metric": ref_name}
    return results


def format_table(results: dict[str, dict]) -> str:
    header = f"{'metric':<16}{'level':<11}" + "".join(f"{s:>8}" for s in STAT_NAMES) + f"{'pairs':>8}{'NaN':>6}"
    lines = [header, "-" * len(header)]
    for name, res in results.items():
        label = name if res["reference_metric"] == name else f"{name}:{res['reference_metric']}"
        for level in ("utterance", "system"):
            st = res[level]
            lines.append(f"{label:<16}{level:<11}" + "".join(f"{st[s]:>8.4f}" for s in STAT_NAMES)
                         + f"{st['num_pairs']:>8d}{st['num_dropped']:>6d}")
    return "\n".join(lines)


def to_json(results: dict[str, dict]) -> dict:
    """The documented JSON layout: levels with the four statistics (per metric when several)."""
    def levels(res):
        return {level: {s: res[level][s] for s in STAT_NAMES} for level in ("utterance", "system")}

    if len(results) == 1:
        return levels(next(iter(results.values())))
    return {name: levels(res) for name, res in results.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m urgent_jax.sqa.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, help="results.jsonl or <metric>.scp")
    parser.add_argument("--ref", required=True, help="Track 2 data.jsonl")
    parser.add_argument("--pred-metric", action="append", help="NAME or NAME:REF (repeatable)")
    parser.add_argument("--output", help="write the statistics as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        results = evaluate(read_predictions(args.pred), read_jsonl(args.ref),
                           parse_metric_pairs(args.pred_metric))
    except (KeyError, ValueError, OSError) as e:
        # str(KeyError) is the repr of its message: print the message itself
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(to_json(results), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
