"""Rule-based filtering of scores.tsv into curated Track 1 source lists, with a report.

    python -m urgent_jax.curation.filter --scores W/scores.tsv \
        --rules configs/curation/urgent2025.py[:variant] --out W/curated [--utt2lang F] [--resample]

Rules (a config file, see configs/curation/urgent2025.py): lower / upper bounds per score column
for every utterance (`min_scores`, `max_scores`) and per corpus (`corpus_min_scores`,
`corpus_max_scores`), the corpus of a uid being the first of the `corpora` (name, regular
expression) pairs it matches ("other" if none). An utterance is kept when it meets every
bound that applies (a NaN never does).

Outputs in `out`: speech_sources.scp (`uid fs path`, the official format, REFERENCE.md §1.1),
source_length.scp, utt2spk (uid uid, as the official train sources), utt2lang (with --utt2lang),
removed.tsv (uid, corpus, failed rules), summary.json, report.md and figures/<column>.png
(histograms with the thresholds; hours kept / removed per corpus, language and rate). The language
of a uid is its --utt2lang entry, else the official uid rule (REFERENCE.md §1.2: corpus markers such
as mls_french -> fra, else eng; `data.presimulate.language_of`).

fs: without `resample` each kept file is listed at its own rate. With it, files whose estimated-
bandwidth rate (`target_fs`, §5.1) is below their rate are resampled with soxr (HQ, as the 2025
utilities) to out/audio/<uid>.wav (16-bit) and listed at that rate, as the official lists are;
packed utterances (`packed:<DIR>#<uid>`) are read from their pack. A file that cannot be resampled
(missing, moved, unreadable, or at another rate than scored) is logged, removed with the reason
`resample_error: ...` in removed.tsv, and counted (summary `num_resample_errors`); the run goes on.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from urgent_jax.audio.io import AudioFileError, audio_exists, read_audio
from urgent_jax.curation.score import read_scores
from urgent_jax.data.manifest import SourceEntry, read_kv, write_kv, write_source_list
from urgent_jax.data.presimulate import language_of

OTHER = "other"
RESAMPLE_ERROR = "resample_error"  # removed.tsv / removed_by_rule: a kept file not resampled
log = logging.getLogger(__name__)


def corpus_of(uid: str, corpora) -> str:
    """The first corpus whose uid regular expression matches (re.search), else 'other'.
    corpora: (name, pattern) pairs in order, or a mapping."""
    pairs = corpora.items() if isinstance(corpora, Mapping) else corpora
    for name, pattern in pairs:
        if re.search(pattern, uid):
            return name
    return OTHER


def failed_rules(row: Mapping, corpus: str, rules: Mapping) -> list[str]:
    """The bounds `row` misses, as 'column>=bound' / 'column<=bound' strings (empty: keep)."""
    bounds = []
    for key, op in (("min_scores", ">="), ("max_scores", "<=")):
        bounds += [(c, op, b) for c, b in dict(rules.get(key) or {}).items()]
    for key, op in (("corpus_min_scores", ">="), ("corpus_max_scores", "<=")):
        per_corpus = dict(rules.get(key) or {}).get(corpus) or {}
        bounds += [(c, op, b) for c, b in dict(per_corpus).items()]
    failed = []
    for column, op, bound in bounds:
        if column not in row:
            raise KeyError(f"rule on unknown score column {column!r}")
        value = float(row[column])
        ok = value >= bound if op == ">=" else value <= bound
        if not ok or math.isnan(value):
            failed.append(f"{column}{op}{bound:g}")
    return failed


def _all_bounds(rules: Mapping) -> list[tuple[str, float]]:
    """(column, bound) of every rule, the per-corpus ones of every corpus included."""
    bounds = []
    for key in ("min_scores", "max_scores"):
        bounds += [(c, float(b)) for c, b in dict(rules.get(key) or {}).items()]
    for key in ("corpus_min_scores", "corpus_max_scores"):
        for per_corpus in dict(rules.get(key) or {}).values():
            bounds += [(c, float(b)) for c, b in dict(per_corpus or {}).items()]
    return bounds


def _check_rule_columns(scores, table: Mapping[str, Mapping], rules: Mapping) -> None:
    """A rule on a column that no row has a value for (e.g. distill_mos scored with
    --nodistill_mos) would remove every utterance: refuse it."""
    for column in sorted({c for c, _ in _all_bounds(rules)}):
        values = [row[column] for row in table.values() if column in row]
        if values and all(math.isnan(float(v)) for v in values):
            raise ValueError(
                f"{scores}: the rules bound {column!r}, but no utterance has a value for it "
                "(scored with --nodistill_mos?)"
            )


def _load_rules(rules) -> dict:
    if isinstance(rules, str | os.PathLike):
        from urgent_jax.train.config_file import load_config

        rules = load_config(os.fspath(rules))
    if hasattr(rules, "to_dict"):
        rules = rules.to_dict()
    known = {"min_scores", "max_scores", "corpora", "corpus_min_scores", "corpus_max_scores"}
    unknown = set(rules) - known
    if unknown:
        raise ValueError(f"unknown rule keys {sorted(unknown)} (known: {sorted(known)})")
    return dict(rules)


class ResampleError(Exception):
    """A kept file that cannot be resampled (missing, unreadable, another rate than scored)."""


def _resample_file(path: str, fs: int, target_fs: int, out_path: Path) -> int:
    """soxr HQ resampling of channel 0 of a file or packed utterance (`packed:<DIR>#<uid>`) to
    a 16-bit wav; returns the new length in samples. ResampleError naming the reason."""
    import soundfile as sf
    import soxr

    if not audio_exists(path):
        raise ResampleError(f"missing: {path}")
    try:
        x, rate = read_audio(path, first_channel=True)
    except AudioFileError as e:
        raise ResampleError(f"unreadable: {e}") from None
    if rate != fs:
        raise ResampleError(f"wrong_rate: {path} is at {rate} Hz, scores say {fs} Hz")
    y = soxr.resample(x[0], fs, target_fs, quality="HQ")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out_path), y, target_fs, subtype="PCM_16")
    return len(y)


def _hours_table(rows, key) -> dict[str, dict[str, float]]:
    table = collections.defaultdict(lambda: {"kept_h": 0.0, "removed_h": 0.0})
    for row in rows:
        table[str(key(row))]["kept_h" if row["kept"] else "removed_h"] += row["duration_s"] / 3600
    return dict(sorted(table.items()))


def _plot_histograms(out: Path, scores: Mapping[str, dict], rules: Mapping) -> list[str]:
    """figures/<column>.png for every column with a rule: kept vs removed, threshold lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = collections.defaultdict(set)
    for column, bound in _all_bounds(rules):
        lines[column].add(bound)
    columns = sorted(set(lines) | {"dnsmos_ovrl", "distill_mos", "speech_ratio", "snr_db"})
    names = []
    for column in columns:
        values = np.array([r[column] for r in scores.values()], float)
        kept = np.array([r["kept"] for r in scores.values()], bool)
        finite = np.isfinite(values)
        if not finite.any():
            continue
        bins = np.histogram_bin_edges(values[finite], bins=30)
        fig, ax = plt.subplots(figsize=(4.5, 3.0), dpi=100)
        ax.hist(values[finite & kept], bins=bins, alpha=0.7, label="kept", color="tab:blue")
        ax.hist(values[finite & ~kept], bins=bins, alpha=0.7, label="removed", color="tab:red")
        for bound in sorted(lines.get(column, ())):
            ax.axvline(bound, color="k", linestyle="--", linewidth=1)
        ax.set_xlabel(column)
        ax.set_ylabel("utterances")
        ax.legend(fontsize="small")
        fig.tight_layout()
        (out / "figures").mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "figures" / f"{column}.png")
        plt.close(fig)
        names.append(column)
    return names


def filter_scores(
    scores: str | os.PathLike,
    rules,
    out: str | os.PathLike,
    *,
    utt2lang: str | os.PathLike | None = None,
    resample: bool = False,
    make_figures: bool = True,
) -> dict:
    """Apply `rules` (a config path `file.py[:variant]`, a ConfigDict or a dict) to scores.tsv and
    write the curated lists and report into `out`.

    Returns a summary dict: out, num_scored, num_kept, num_removed, num_resample_errors (kept
    utterances removed because they could not be resampled), kept_h, removed_h,
    removed_by_rule ({rule: utterances}), by_corpus / by_language / by_fs ({name: {kept_h,
    removed_h}}), elapsed_s.
    """
    start = time.perf_counter()
    rules = _load_rules(rules)
    if not os.path.isfile(scores):
        raise FileNotFoundError(f"{scores}: scores file not found (--scores)")
    table = read_scores(scores, strict=True)  # a bad row: an error naming its line
    if not table:
        raise ValueError(f"{scores}: no scored utterances (empty scores file)")
    _check_rule_columns(scores, table, rules)
    langs = read_kv(utt2lang) if utt2lang is not None else {}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpora = rules.get("corpora") or ()
    entries, lengths, removed = [], {}, []
    removed_by_rule = collections.Counter()
    num_resample_errors = 0
    for uid in sorted(table):
        row = table[uid]
        row["corpus"] = corpus_of(uid, corpora)
        row["language"] = language_of(uid, langs)
        failed = failed_rules(row, row["corpus"], rules)
        row["kept"] = not failed
        if failed:
            removed.append((uid, row["corpus"], ",".join(failed)))
            removed_by_rule.update(failed)
            continue
        fs, path = row["fs"], row["path"]
        num_samples = round(row["duration_s"] * fs)
        if resample and row["target_fs"] < fs:
            new_path = out / "audio" / f"{uid}.wav"
            try:
                num_samples = _resample_file(path, fs, row["target_fs"], new_path)
            except ResampleError as e:  # skip and count: one bad file never stops the run
                reason = " ".join(str(e).split())  # one tab-free line in removed.tsv
                log.warning("%s: not resampled, removed (%s)", uid, reason)
                row["kept"] = False
                removed.append((uid, row["corpus"], f"{RESAMPLE_ERROR}: {reason}"))
                removed_by_rule[RESAMPLE_ERROR] += 1
                num_resample_errors += 1
                continue
            fs, path = row["target_fs"], str(new_path)
        entries.append(SourceEntry(uid, fs, path))
        lengths[uid] = num_samples
    write_source_list(out / "speech_sources.scp", entries)
    write_kv(out / "source_length.scp", lengths)
    write_kv(out / "utt2spk", {e.uid: e.uid for e in entries})
    if langs:
        write_kv(out / "utt2lang", {e.uid: language_of(e.uid, langs) for e in entries})
    with open(out / "removed.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write("uid\tcorpus\tfailed\n")
        f.writelines("\t".join(r) + "\n" for r in removed)
    rows = list(table.values())
    summary = {
        "out": str(out),
        "scores": str(scores),
        "rules": rules,
        "num_scored": len(rows),
        "num_kept": len(entries),
        "num_removed": len(removed),
        "num_resample_errors": num_resample_errors,
        "kept_h": sum(r["duration_s"] for r in rows if r["kept"]) / 3600,
        "removed_h": sum(r["duration_s"] for r in rows if not r["kept"]) / 3600,
        "removed_by_rule": dict(removed_by_rule.most_common()),
        "by_corpus": _hours_table(rows, lambda r: r["corpus"]),
        "by_language": _hours_table(rows, lambda r: r["language"]),
        "by_fs": _hours_table(rows, lambda r: r["target_fs"] if resample else r["fs"]),
    }
    figures = _plot_histograms(out, table, rules) if make_figures and rows else []
    (out / "report.md").write_text(format_report(summary, figures), encoding="utf-8")
    summary["elapsed_s"] = time.perf_counter() - start
    with open(out / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def format_summary(summary: Mapping) -> str:
    """Kept / removed lines printed by the command (and the quickstart)."""
    lines = [
        f"kept {summary['num_kept']} / {summary['num_scored']} utterances "
        f"({summary['kept_h']:.3f} h kept, {summary['removed_h']:.3f} h removed) -> "
        f"{summary['out']}/speech_sources.scp"
    ]
    if summary["removed_by_rule"]:
        rules = ", ".join(f"{k}: {v}" for k, v in summary["removed_by_rule"].items())
        lines.append(f"  failed rules (utterances): {rules}")
    if summary.get("num_resample_errors"):
        lines.append(
            f"  {summary['num_resample_errors']} kept utterances could not be resampled (missing, "
            f"unreadable or at another rate) and were removed: see removed.tsv ({RESAMPLE_ERROR})"
        )
    for title, key in (("corpus", "by_corpus"), ("language", "by_language"), ("fs", "by_fs")):
        cells = ", ".join(
            f"{name} {v['kept_h']:.3f}/{v['kept_h'] + v['removed_h']:.3f} h"
            for name, v in summary[key].items()
        )
        lines.append(f"  kept per {title}: {cells}")
    return "\n".join(lines)


def format_report(summary: Mapping, figures: list[str]) -> str:
    lines = ["# Curation report", "", "```", format_summary(summary), "```", ""]
    for title, key in (("corpus", "by_corpus"), ("language", "by_language"), ("fs", "by_fs")):
        lines += [f"## Hours per {title}", "", f"| {title} | kept h | removed h |", "|---|---|---|"]
        lines += [
            f"| {name} | {v['kept_h']:.3f} | {v['removed_h']:.3f} |"
            for name, v in summary[key].items()
        ]
        lines.append("")
    if figures:
        lines += ["## Score histograms (dashed: thresholds)", ""]
        lines += [f"![{c}](figures/{c}.png)" for c in figures]
    return "\n".join(lines) + "\n"


# --- command line ---------------------------------------------------------------------------------


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("scores", None, "scores.tsv from urgent_jax.curation.score.")
    flags.DEFINE_string("rules", None, "Rules config, configs/curation/<name>.py[:variant].")
    flags.DEFINE_string("out", None, "Output directory for the curated lists and report.")
    flags.DEFINE_string("utt2lang", None, "uid -> language, for the per-language table.")
    flags.DEFINE_bool("resample", False, "Resample kept files to their estimated-bandwidth rate.")
    flags.mark_flags_as_required(["scores", "rules", "out"])


def main(argv) -> None:
    from absl import app, flags

    f = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    summary = filter_scores(f.scores, f.rules, f.out, utt2lang=f.utt2lang, resample=f.resample)
    print(format_summary(summary))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
