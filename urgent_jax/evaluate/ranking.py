"""The official Track 1 leaderboard procedure over RESULTS.txt files (REFERENCE.md §4.4).

    python -m urgent_jax.evaluate.ranking --results sysA/RESULTS.txt sysB/RESULTS.txt ... \
        [--names A B ...] [--categories categories.json] [--output ranking.md] \
        [--json ranking.json] [--no_rerank]

1. per metric, the mean over utterances of each system (the RESULTS.txt values);
2. per metric, the dense ("1223") rank of the systems: descending for higher-is-better outputs,
   ascending for lower-is-better ones (LSD, MCD; `registry.output_direction`);
3. per category, the dense rank of the mean of its metric ranks;
4. overall, the dense rank of the mean of the category ranks.

Steps 3 and 4 re-rank the means as the challenge page's pseudo-code does (default). With
`rerank=False` (`--no_rerank`) the category and overall values are the plain means of ranks, as
the page's prose says; the final place is then the dense rank of the overall mean.

A metric missing from every system is dropped, and so is a category left without metrics (both
reported). A system missing a metric that others have (or with a NaN mean) ranks last on it.
Ties are exact equality of the RESULTS.txt values (4 decimals); means of ranks are compared after
rounding to 9 decimals so that float noise cannot break a tie.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from urgent_jax.data.manifest import read_results
from urgent_jax.metrics.registry import output_direction

# URGENT 2026 Track 1 objective metrics by category (challenge web page), as output names.
DEFAULT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Non-intrusive SE": ("DNSMOS_OVRL", "NISQA", "UTMOS", "SCOREQ"),
    "Intrusive SE": ("PESQ", "ESTOI", "POLQA"),
    "Downstream-task-independent": ("SpeechBERTScore", "LPS"),
    "Downstream-task-dependent": ("SpkSim", "EmoSim", "LID_ACC", "CAcc"),
}
_ROUND = 9  # decimals kept when comparing means of ranks


def dense_rank(values: Sequence[float], higher_is_better: bool) -> list[int]:
    """Dense ("1223") ranks, 1 = best; NaN ranks after every number."""
    finite = sorted({v for v in values if not math.isnan(v)}, reverse=higher_is_better)
    position = {v: i + 1 for i, v in enumerate(finite)}
    last = len(finite) + 1
    return [last if math.isnan(v) else position[v] for v in values]


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), _ROUND)


@dataclasses.dataclass(frozen=True)
class Ranking:
    systems: list[str]  # in input order
    categories: dict[str, list[str]]  # the categories used (non-empty), with their metrics
    dropped_metrics: list[str]  # in no system
    dropped_categories: list[str]  # no metric left
    rerank: bool
    means: dict[str, dict[str, float]]  # system -> metric -> mean (NaN when missing)
    metric_ranks: dict[str, dict[str, int]]  # system -> metric -> dense rank
    category_scores: dict[str, dict[str, float]]  # system -> category -> rank (or mean of ranks)
    overall: dict[str, float]  # system -> overall rank (or mean of category values)
    place: dict[str, int]  # system -> final dense place

    def order(self) -> list[str]:
        """Systems by place, then input order."""
        return sorted(self.systems, key=lambda s: (self.place[s], self.systems.index(s)))


def rank_systems(
    results: Mapping[str, Mapping[str, float]],
    categories: Mapping[str, Sequence[str]] | None = None,
    *,
    rerank: bool = True,
) -> Ranking:
    """Rank systems ({name: {output: mean}}) with the official procedure (module docstring)."""
    if not results:
        raise ValueError("no system to rank")
    categories = DEFAULT_CATEGORIES if categories is None else categories
    systems = list(results)
    used, dropped_metrics, dropped_categories = {}, [], []
    for category, metrics in categories.items():
        kept = [m for m in metrics if any(m in results[s] for s in systems)]
        dropped_metrics += [m for m in metrics if m not in kept]
        if kept:
            used[category] = kept
        else:
            dropped_categories.append(category)
    if not used:
        raise ValueError("no metric of any category is in the results")
    metrics = list(dict.fromkeys(m for ms in used.values() for m in ms))
    means = {s: {m: float(results[s].get(m, math.nan)) for m in metrics} for s in systems}
    metric_ranks = {s: {} for s in systems}
    for metric in metrics:
        ranks = dense_rank([means[s][metric] for s in systems], output_direction(metric))
        for s, r in zip(systems, ranks):
            metric_ranks[s][metric] = r
    category_scores = {s: {} for s in systems}
    for category, members in used.items():
        values = [_mean([metric_ranks[s][m] for m in members]) for s in systems]
        if rerank:
            values = dense_rank(values, higher_is_better=False)
        for s, v in zip(systems, values):
            category_scores[s][category] = v
    overall_values = [_mean(list(category_scores[s].values())) for s in systems]
    if rerank:
        overall_values = dense_rank(overall_values, higher_is_better=False)
    overall = dict(zip(systems, overall_values))
    place = dict(zip(systems, dense_rank(overall_values, higher_is_better=False)))
    return Ranking(
        systems,
        used,
        dropped_metrics,
        dropped_categories,
        rerank,
        means,
        metric_ranks,
        category_scores,
        overall,
        place,
    )


def _num(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}"


def format_markdown(ranking: Ranking) -> str:
    """One row per system (by place): per-metric `mean (rank)`, category values, overall, place."""
    metrics = [m for ms in ranking.categories.values() for m in ms]
    kind = "rank" if ranking.rerank else "mean rank"
    header = ["place", "system"] + [f"{m} {'↑' if output_direction(m) else '↓'}" for m in metrics]
    header += [f"{c} ({kind})" for c in ranking.categories] + [f"overall ({kind})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in ranking.order():
        cells = [str(ranking.place[s]), s]
        for m in metrics:
            mean = ranking.means[s][m]
            value = "n/a" if math.isnan(mean) else f"{mean:.4f}"
            cells.append(f"{value} ({ranking.metric_ranks[s][m]})")
        cells += [_num(ranking.category_scores[s][c]) for c in ranking.categories]
        cells.append(_num(ranking.overall[s]))
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if ranking.dropped_metrics:
        notes.append(f"Metrics in no system (dropped): {', '.join(ranking.dropped_metrics)}.")
    if ranking.dropped_categories:
        notes.append(
            f"Categories without metrics (dropped): {', '.join(ranking.dropped_categories)}."
        )
    notes.append(
        "Dense (1223) ranks; categories and overall "
        + ("re-ranked from the means of ranks." if ranking.rerank else "are plain means of ranks.")
    )
    return "\n".join(lines + [""] + notes) + "\n"


def to_json(ranking: Ranking) -> dict:
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    return {
        "rerank": ranking.rerank,
        "categories": ranking.categories,
        "dropped_metrics": ranking.dropped_metrics,
        "dropped_categories": ranking.dropped_categories,
        "systems": [
            {
                "name": s,
                "place": ranking.place[s],
                "overall": ranking.overall[s],
                "category": ranking.category_scores[s],
                "metric_ranks": ranking.metric_ranks[s],
                "means": {m: clean(v) for m, v in ranking.means[s].items()},
            }
            for s in ranking.order()
        ],
    }


def load_categories(path: str | os.PathLike) -> dict[str, list[str]]:
    """A JSON object {category: [output names]}."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(m, str) for m in v) for v in data.values()
    ):
        raise ValueError(f"{path}: expected a JSON object {{category: [output names]}}")
    return data


def system_names(paths: Sequence[str], names: Sequence[str] | None = None) -> list[str]:
    """Given names, else each RESULTS.txt's directory name (the full directory when not unique)."""
    if names:
        if len(names) != len(paths) or len(set(names)) != len(names):
            raise ValueError("--names needs one unique name per --results file")
        return list(names)
    short = [Path(p).resolve().parent.name for p in paths]
    if len(set(short)) == len(short):
        return short
    return [str(Path(p).parent) for p in paths]


def parse_args(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(
        prog="python -m urgent_jax.evaluate.ranking", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--results", nargs="+", required=True, help="RESULTS.txt of each system")
    parser.add_argument("--names", nargs="+", help="system names (default: directory names)")
    parser.add_argument("--categories", help="JSON {category: [outputs]} (default: Track 1 2026)")
    parser.add_argument("--output", help="write the markdown table here")
    parser.add_argument("--json", help="write the ranking as JSON here")
    parser.add_argument(
        "--no_rerank",
        action="store_true",
        help="plain means of ranks for categories and overall (the page's prose)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Ranking:
    args = parse_args(argv)
    try:
        names = system_names(args.results, args.names)
        results = {name: read_results(p) for name, p in zip(names, args.results)}
        categories = load_categories(args.categories) if args.categories else None
        ranking = rank_systems(results, categories, rerank=not args.no_rerank)
    except (ValueError, OSError) as e:  # ManifestError is a ValueError
        raise SystemExit(f"error: {e}") from None
    for category in ranking.dropped_categories:
        print(f"dropped category {category!r}: none of its metrics is in any RESULTS.txt")
    text = format_markdown(ranking)
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fp:
            json.dump(to_json(ranking), fp, indent=2)
    return ranking


if __name__ == "__main__":
    main()
