"""Human-readable report of a score directory, and the readers of that directory.

    python -m urgent_jax.evaluate.report OUT      # (re)writes OUT/report.md and OUT/figures/

A score directory (written by `score.py`) holds `<OUTPUT>.scp`, RESULTS.txt, errors.tsv,
summary.json and optionally noisy/ (the same files for the noisy inputs) and BREAKDOWN.md. The
report has the overall table (higher/lower-is-better arrows; noisy, enhanced and their difference
when the noisy inputs were scored), error counts, links to the breakdown and PNG figures made with
matplotlib's Agg canvas: a histogram per output, a noisy-vs-enhanced scatter per output, and
spectrograms (noisy / enhanced / reference) of the worst, median and best utterance by the first
intrusive output (else DNSMOS_OVRL, else the first output).
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from urgent_jax.audio.io import AudioFileError, read_audio
from urgent_jax.data.manifest import read_kv, read_results, read_scores
from urgent_jax.metrics.registry import output_direction

ERRORS_FILE = "errors.tsv"
ERRORS_COLUMNS = ("uid", "metric", "reason")
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
BREAKDOWN_FILE = "BREAKDOWN.md"
FIGURES_DIR = "figures"
NOISY_DIR = "noisy"
EXAMPLE_MAX_S = 10.0  # spectrograms show at most the first 10 s
EXAMPLE_DYNAMIC_RANGE_DB = 80.0
FALLBACK_OUTPUT = "DNSMOS_OVRL"

PathLike = str | os.PathLike


# --- score directory (read side) -----------------------------------------------------------------


def read_audio_list(scp: PathLike) -> dict[str, str]:
    """uid -> audio path of a wav.scp-like list, in file order. A relative path is taken as written
    when it exists from the working directory, else relative to the list's directory."""
    base = os.path.dirname(os.fspath(scp))
    out = {}
    for uid, path in read_kv(scp).items():
        if not os.path.isabs(path) and not os.path.exists(path):
            candidate = os.path.join(base, path)
            path = candidate if os.path.exists(candidate) else path
        out[uid] = path
    return out


def read_score_dir(directory: PathLike) -> dict[str, dict[str, float]]:
    """{output: {uid: value}} for the outputs listed in RESULTS.txt, in its order."""
    directory = Path(directory)
    names = read_results(directory / "RESULTS.txt")
    return {name: read_scores(directory / f"{name}.scp", allow_empty=True) for name in names}


def read_errors(path: PathLike) -> list[tuple[str, str, str]]:
    """errors.tsv rows (uid, metric or '*', reason); [] when the file is absent."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    if not lines or tuple(lines[0].split("\t")) != ERRORS_COLUMNS:
        raise ValueError(f"{path}: expected the header {chr(9).join(ERRORS_COLUMNS)!r}")
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{path}:{line_no}: expected 3 tab-separated columns")
        rows.append((fields[0], fields[1], fields[2]))
    return rows


def reason_kind(reason: str) -> str:
    """'length mismatch: ref 10, inf 12 samples' -> 'length mismatch'."""
    return reason.split(":", 1)[0].strip()


def count_errors(rows: Sequence[tuple[str, str, str]]) -> dict[str, int]:
    """Utterances per reason kind, most frequent first."""
    uids: dict[str, set[str]] = collections.defaultdict(set)
    for uid, _, reason in rows:
        uids[reason_kind(reason)].add(uid)
    counts = {kind: len(u) for kind, u in uids.items()}
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def read_summary(directory: PathLike) -> dict:
    """summary.json, or a minimal one rebuilt from RESULTS.txt when it is absent."""
    path = Path(directory) / SUMMARY_FILE
    if path.exists():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    names = list(read_results(Path(directory) / "RESULTS.txt"))
    metrics = [
        {
            "name": n.lower(),
            "outputs": [n],
            "intrusive": False,
            "higher_is_better": output_direction(n),
        }
        for n in names
    ]
    return {"inputs": {}, "metrics": metrics}


# --- figures --------------------------------------------------------------------------------------


def arrow(output: str, directions: Mapping[str, bool] | None = None) -> str:
    higher = (directions or {}).get(output, output_direction(output))
    return "↑" if higher else "↓"


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    return {uid: v for uid, v in values.items() if math.isfinite(v)}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # Agg canvas on savefig; no pyplot global state

    fig = Figure(figsize=(width, height), dpi=80)  # no layout engine: it doubles the time
    fig.subplots_adjust(left=0.17, right=0.96, bottom=0.17, top=0.95)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_histogram(
    path: Path, output: str, values: Sequence[float], noisy: Sequence[float] | None, direction: str
) -> Path:
    fig = _figure(4.5, 3.0)
    ax = fig.add_subplot()
    data = [np.asarray(values, float)] + ([np.asarray(noisy, float)] if noisy is not None else [])
    finite = np.concatenate([d[np.isfinite(d)] for d in data])
    bins = np.histogram_bin_edges(finite, bins=30) if finite.size else 10
    if noisy is not None:
        n = np.asarray(noisy, float)
        ax.hist(n[np.isfinite(n)], bins=bins, alpha=0.5, label="noisy", color="tab:gray")
    v = data[0]
    ax.hist(v[np.isfinite(v)], bins=bins, alpha=0.7, label="enhanced", color="tab:blue")
    ax.set_xlabel(f"{output} ({direction})")
    ax.set_ylabel("utterances")
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_scatter(
    path: Path, output: str, noisy: Mapping[str, float], enhanced: Mapping[str, float]
) -> Path:
    uids = [
        u for u in enhanced if u in noisy and math.isfinite(enhanced[u]) and math.isfinite(noisy[u])
    ]
    x = np.array([noisy[u] for u in uids])
    y = np.array([enhanced[u] for u in uids])
    fig = _figure(3.6, 3.6)
    ax = fig.add_subplot()
    ax.scatter(x, y, s=8, alpha=0.6)
    if uids:
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="tab:red", linewidth=0.8)
    ax.set_xlabel(f"noisy {output}")
    ax.set_ylabel(f"enhanced {output}")
    return _save(fig, path)


def pick_examples(values: Mapping[str, float], higher_is_better: bool) -> list[tuple[str, str]]:
    """[(label, uid)] for the worst, median and best finite value (fewer when fewer utterances)."""
    ranked = sorted(_finite(values).items(), key=lambda kv: (kv[1], kv[0]))
    if not higher_is_better:
        ranked = ranked[::-1]
    if not ranked:
        return []
    picks, seen = [], set()
    for label, index in (("worst", 0), ("median", len(ranked) // 2), ("best", len(ranked) - 1)):
        uid = ranked[index][0]
        if uid not in seen:
            picks.append((label, uid))
            seen.add(uid)
    return picks


def _spectrograms_db(signals: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    """dB magnitudes [frames, bins] of 1-D signals at one rate, ~32 ms windows (power of two),
    75 % overlap; one batched STFT call (zero-padded to the longest signal, then cropped)."""
    from urgent_jax.audio.stft import num_frames, stft

    n_fft = 1 << math.ceil(math.log2(0.032 * sample_rate))
    hop_length = n_fft // 4
    num_time = max(n_fft, max(len(x) for x in signals))
    batch = np.zeros((len(signals), num_time), np.float32)
    for i, x in enumerate(signals):
        batch[i, : len(x)] = x
    spec = np.abs(np.asarray(stft(batch, n_fft, hop_length, pad_mode="constant")))
    db = 20.0 * np.log10(spec + 1e-8)
    return [db[i, : num_frames(max(len(x), 1), n_fft, hop_length)] for i, x in enumerate(signals)]


def plot_examples(
    path: Path,
    picks: Sequence[tuple[str, str, float]],
    sources: Mapping[str, Mapping[str, str]],
    output: str,
) -> Path:
    """One row per (label, uid, value), one column per signal kind of `sources` (kind -> uid ->
    path)."""
    kinds = list(sources)
    audio = {}  # (row, col) -> (first EXAMPLE_MAX_S of channel 0, sample_rate)
    for row, (_, uid, _) in enumerate(picks):
        for col, kind in enumerate(kinds):
            audio_path = sources[kind].get(uid)
            try:
                if audio_path is None:
                    raise AudioFileError("not in the list")
                x, sample_rate = read_audio(audio_path, first_channel=True)
            except AudioFileError:
                continue
            audio[row, col] = np.nan_to_num(x[0, : int(EXAMPLE_MAX_S * sample_rate)]), sample_rate
    spectra = {}
    for rate in {r for _, r in audio.values()}:  # one STFT call per sampling rate
        cells = [cell for cell, (_, r) in audio.items() if r == rate]
        spectra.update(zip(cells, _spectrograms_db([audio[c][0] for c in cells], rate)))
    fig = _figure(3.8 * len(kinds), 2.4 * len(picks))
    axes = fig.subplots(len(picks), len(kinds), squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.93, wspace=0.25, hspace=0.6)
    for row, (label, uid, value) in enumerate(picks):
        row_db = [float(db.max()) for (r, _), db in spectra.items() if r == row]
        top = max(row_db, default=0.0)  # one colour scale per row: signals stay comparable
        for col, kind in enumerate(kinds):
            ax = axes[row][col]
            ax.set_title(f"{kind} | {label} {output}={value:.3g} | {uid}", fontsize=7)
            if (row, col) not in spectra:
                ax.text(0.5, 0.5, "unavailable", ha="center", va="center")
                ax.set_axis_off()
                continue
            db, (x, sample_rate) = spectra[row, col], audio[row, col]
            extent = (0.0, len(x) / sample_rate, 0.0, sample_rate / 2000.0)
            ax.imshow(
                db.T,
                origin="lower",
                aspect="auto",
                extent=extent,
                cmap="magma",
                vmin=top - EXAMPLE_DYNAMIC_RANGE_DB,
                vmax=top,
            )
            ax.set_xlabel("time (s)", fontsize=7)
            ax.set_ylabel("kHz", fontsize=7)
            ax.tick_params(labelsize=6)
    return _save(fig, path)


def _example_output(summary: Mapping, scores: Mapping[str, Mapping[str, float]]) -> str | None:
    """First intrusive output with a finite value, else DNSMOS_OVRL, else the first usable one."""
    usable = [o for o, v in scores.items() if _finite(v)]
    intrusive = [o for m in summary.get("metrics", []) if m["intrusive"] for o in m["outputs"]]
    for output in intrusive + [FALLBACK_OUTPUT] + usable:
        if output in usable:
            return output
    return None


# --- report.md -----------------------------------------------------------------------------------


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _fresh(path: Path, results: Path) -> bool:
    """`path` exists and is not older than RESULTS.txt (not left over from an earlier run)."""
    return path.exists() and path.stat().st_mtime_ns >= results.stat().st_mtime_ns


def _link(name: str, path: str) -> str:
    return f"[{name}]({path})"


def make_report(output_dir: PathLike) -> Path:
    """Write OUT/report.md and OUT/figures/*.png from the files of a score directory."""
    out = Path(output_dir)
    summary = read_summary(out)
    scores = read_score_dir(out)
    means = read_results(out / "RESULTS.txt")
    noisy_dir = out / NOISY_DIR
    has_noisy = _fresh(noisy_dir / "RESULTS.txt", out / "RESULTS.txt")
    noisy_scores = read_score_dir(noisy_dir) if has_noisy else {}
    noisy_means = read_results(noisy_dir / "RESULTS.txt") if has_noisy else {}
    errors = read_errors(out / ERRORS_FILE)
    directions = {
        o: m["higher_is_better"] for m in summary.get("metrics", []) for o in m["outputs"]
    }
    figures = out / FIGURES_DIR

    lines = ["# Evaluation report", ""]
    inputs = summary.get("inputs", {})
    for key, label in (
        ("inf_scp", "enhanced"),
        ("ref_scp", "reference"),
        ("noisy_scp", "noisy"),
        ("meta_tsv", "meta.tsv"),
    ):
        if inputs.get(key):
            lines.append(f"- {label}: `{inputs[key]}`")
    num_utts = len(next(iter(scores.values()), {}))
    metric_names = ", ".join(m["name"] for m in summary.get("metrics", []))
    lines += [f"- utterances: {num_utts}", f"- metrics: {metric_names}"]
    if summary.get("elapsed_s") is not None:
        lines.append(f"- scoring time: {summary['elapsed_s']:.1f} s")
    if summary.get("metric_time_s"):
        times = ", ".join(f"{n} {t:.1f} s" for n, t in summary["metric_time_s"].items())
        lines.append(f"- time in metrics (compiles included): {times}")

    lines += ["", "## Overall (RESULTS.txt: NaN-ignoring means over utterances)", ""]
    header = "| output | better | enhanced |"
    rule = "|---|:-:|---:|"
    if has_noisy:
        header += " noisy | enhanced − noisy |"
        rule += "---:|---:|"
    lines += [header + " valid |", rule + "---:|"]
    for output, values in scores.items():
        row = f"| {output} | {arrow(output, directions)} | {_fmt(means.get(output))} |"
        if has_noisy:
            noisy_mean = noisy_means.get(output)
            delta = None if noisy_mean is None else means.get(output, math.nan) - noisy_mean
            row += f" {_fmt(noisy_mean)} | {_fmt(delta, signed=True)} |"
        lines.append(row + f" {len(_finite(values))}/{len(values)} |")

    lines += ["", "## Errors", ""]
    counts = count_errors(errors)
    if counts:
        lines += ["| reason | utterances |", "|---|---:|"]
        lines += [f"| {kind} | {n} |" for kind, n in counts.items()]
        lines += ["", f"Every affected (utterance, metric): {_link(ERRORS_FILE, ERRORS_FILE)}."]
    else:
        lines.append("No utterance had a problem.")
    if has_noisy:
        noisy_counts = count_errors(read_errors(noisy_dir / ERRORS_FILE))
        total = sum(noisy_counts.values())
        lines.append(
            f"Noisy inputs: {total} error(s), "
            f"{_link('noisy/errors.tsv', NOISY_DIR + '/' + ERRORS_FILE)}."
        )

    lines += ["", "## Breakdown", ""]
    if _fresh(out / BREAKDOWN_FILE, out / "RESULTS.txt"):
        lines.append(
            f"Per sampling rate, SNR, duration, corpus, reverberation, distortion and "
            f"language: {_link(BREAKDOWN_FILE, BREAKDOWN_FILE)}."
        )
    else:
        lines.append("Not computed (score with --meta_tsv to get BREAKDOWN.md).")

    lines += ["", "## Figures", "", "### Distributions", ""]
    for output, values in scores.items():
        name = f"hist_{output}.png"
        noisy_values = list(noisy_scores[output].values()) if output in noisy_scores else None
        plot_histogram(
            figures / name, output, list(values.values()), noisy_values, arrow(output, directions)
        )
        lines.append(f"![{output}]({FIGURES_DIR}/{name})")
    if has_noisy:
        lines += [
            "",
            "### Noisy vs enhanced (per utterance)",
            "",
            "Improved: above the red line for ↑ outputs, below it for ↓ outputs.",
            "",
        ]
        for output, values in scores.items():
            if output not in noisy_scores:
                continue
            name = f"scatter_{output}.png"
            plot_scatter(figures / name, output, noisy_scores[output], values)
            lines.append(f"![{output}]({FIGURES_DIR}/{name})")
    example_output = _example_output(summary, scores)
    if example_output is not None:
        lines += _examples_section(out, summary, scores, example_output, directions)
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _examples_section(out: Path, summary: Mapping, scores, output: str, directions) -> list[str]:
    inputs = summary.get("inputs", {})
    sources = {}
    for kind, key in (("noisy", "noisy_scp"), ("enhanced", "inf_scp"), ("reference", "ref_scp")):
        if inputs.get(key):
            try:
                sources[kind] = read_audio_list(inputs[key])
            except ValueError:  # a list that moved since scoring: no examples from it
                continue
    values = scores[output]
    picks = [
        (label, uid, values[uid])
        for label, uid in pick_examples(values, directions.get(output, output_direction(output)))
    ]
    if not sources or not picks:
        return []
    name = "examples.png"
    plot_examples(out / FIGURES_DIR / name, picks, sources, output)
    lines = ["", f"### Examples (worst, median, best by {output})", ""]
    lines += [f"- {label}: `{uid}` ({output} = {value:.4f})" for label, uid, value in picks]
    return lines + ["", f"![examples]({FIGURES_DIR}/{name})"]


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m urgent_jax.evaluate.report SCORE_DIR")
    print(make_report(argv[1]))


if __name__ == "__main__":
    main(sys.argv)
