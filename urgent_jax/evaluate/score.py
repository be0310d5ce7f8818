"""Score enhanced speech with registered metrics: the standalone Track 1 scoring command.

    python -m urgent_jax.evaluate.score --ref_scp spk1.scp --inf_scp inf.scp --output_dir OUT \
        [--metrics pesq,estoi,sdr,si_sdr,lsd,mcd,dnsmos,distill_mos] [--meta_tsv meta.tsv] \
        [--utt2lang utt2lang] [--text text] [--noisy_scp wav.scp] [--batch_size 16] \
        [--num_workers 2] [--metric_weights name=/path ...] \
        [--metric_loader name=module:function ...] [--plugin_option name.key=value ...] [--noreport]

Outputs (REFERENCE.md §1.4): `OUT/<OUTPUT>.scp` (`uid value`, Python float repr, `nan` on failure)
for every output of every metric, `OUT/RESULTS.txt` (`<OUTPUT>: <nanmean, 4 decimals>`), plus
`OUT/errors.tsv` (uid, metric or `*`, reason), `OUT/summary.json` (inputs, metrics, error counts),
with --noisy_scp the same files for the noisy inputs under `OUT/noisy/`, with --meta_tsv
BREAKDOWN.md / breakdown.json (`breakdown.py`, languages from --utt2lang when given), and
report.md + figures/ (`report.py`). --utt2lang and --text (`uid transcript`) also give plug-ins
their per-utterance labels (`registry.LABELS`). meta.tsv, utt2lang and text are read and checked
before any metric is built: a malformed line stops the command with `file:line: reason`.

Utterances are paired by uid in inf.scp order (reference-only uids follow, as NaN). File headers
are read first to plan: utterances are grouped by sampling rate, sorted by length and batched; each
batch is padded to one of 4 lengths per octave and to a power-of-two batch size (at most
--batch_size), so every jitted metric compiles a bounded number of shapes. Audio (channel 0) is
decoded in a thread pool a few batches ahead of the metrics.

Bad input never stops the run: the affected metrics get NaN for that utterance and errors.tsv says
why (missing in ref / inf, unreadable file, sample rate or length mismatch, silent reference,
non-finite samples, too short for a metric (`MetricSpec.min_samples`: its `min_duration_s`, and
its `min_num_samples` at every rate), no label for a plug-in that needs one, a metric's own reason
such as a PESQ error). Intrusive problems leave the non-intrusive metrics computed on the enhanced
signal. A non-finite score (+-inf: SI-SDR of an all-zero estimate or of a constant reference, or of
an exact copy) is written as NaN with "non-finite score" in errors.tsv, so every output (scp,
RESULTS.txt, summary, breakdown, report) leaves it out of the means; the reference packages give
+-inf there (fast_bss_eval's 10 log10(0)), which would make the official nanmean +-inf. Only a
metric that cannot be built (a plug-in without weights or loader: `MetricUnavailableError`) or
missing labels stop the command, at start, before any audio is read.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from urgent_jax.audio.io import AudioFileError, audio_info, read_audio
from urgent_jax.data.manifest import (
    nanmean_scores,
    read_kv,
    read_meta_tsv,
    write_results,
    write_scores,
)
from urgent_jax.evaluate import breakdown as breakdown_lib
from urgent_jax.evaluate import report as report_lib
from urgent_jax.metrics.registry import (
    LABELS,
    MetricContext,
    MetricFn,
    MetricOptions,
    MetricSpec,
    MetricUnavailableError,
    get_metric,
    list_metrics,
)

ALL_METRICS = "*"  # errors.tsv metric column when every metric of the utterance is affected
SILENCE_THRESHOLD = 1e-6  # max |ref| below this (-120 dBFS, under one 16-bit step) = silent
PREFETCH_BATCHES = 2  # batches decoded ahead of the metrics
LENGTHS_PER_OCTAVE = 4  # padded batch lengths (a power of two): bounded compiles, < 25 % padding
MIN_PADDED_SAMPLES = 4096

# Reason kinds: errors.tsv reasons are "<kind>" or "<kind>: <detail>"; summaries count kinds.
MISSING_IN_REF = "missing in ref"
MISSING_IN_INF = "missing in inf"
UNREADABLE = "unreadable file"
RATE_MISMATCH = "sample rate mismatch"
LENGTH_MISMATCH = "length mismatch"
SILENT_REF = "silent reference"
NON_FINITE = "non-finite samples"
TOO_SHORT = "too short"
MISSING_LABEL = "missing label"
METRIC_NAN = "metric returned NaN"
NON_FINITE_SCORE = "non-finite score"
METRIC_FAILED = "metric failed"

log = logging.getLogger(__name__)


# --- metrics ------------------------------------------------------------------------------------


def resolve_metrics(names: Sequence[str] | None, *, has_ref: bool) -> list[MetricSpec]:
    """Metric specs to run. `None`: every built-in (non-plug-in) metric, intrusive ones only when a
    reference list is given. An explicitly named intrusive metric without references is an error."""
    if names is None:
        specs = list_metrics(include_plugins=False)
        if not has_ref:
            dropped = [s.name for s in specs if s.intrusive]
            if dropped:
                log.warning("no --ref_scp: skipping intrusive metrics %s", ", ".join(dropped))
            specs = [s for s in specs if not s.intrusive]
        return specs
    specs = []
    for name in names:
        try:
            spec = get_metric(name.strip())
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if spec.intrusive and not has_ref:
            raise ValueError(f"metric '{spec.name}' is intrusive and needs --ref_scp")
        if spec not in specs:
            specs.append(spec)
    return specs


def build_metrics(specs: Sequence[MetricSpec], options: MetricOptions) -> dict[str, MetricFn]:
    """Build every metric up front, so a missing plug-in fails before any work."""
    fns = {}
    for spec in specs:
        try:
            fns[spec.name] = spec.build(options)
        except MetricUnavailableError:
            raise
        except Exception as e:  # missing module, unreadable weights, ...: say which metric
            reason = f"{type(e).__name__}: {e}"
            raise MetricUnavailableError(f"metric '{spec.name}' cannot be built ({reason})") from e
    return fns


def padded_num_samples(num_samples: int) -> int:
    """Round up to one of LENGTHS_PER_OCTAVE lengths per octave (at least MIN_PADDED_SAMPLES)."""
    if num_samples <= MIN_PADDED_SAMPLES:
        return MIN_PADDED_SAMPLES
    step = 1 << max(0, (num_samples - 1).bit_length() - LENGTHS_PER_OCTAVE.bit_length() + 1)
    return -(-num_samples // step) * step


def output_names(specs: Sequence[MetricSpec]) -> list[str]:
    return [output for spec in specs for output in spec.outputs]


def context_labels(fn: MetricFn) -> tuple[str, ...] | None:
    """Labels a MetricFn takes through `context=` (None: it takes no context)."""
    return getattr(fn, "context_labels", None)


def read_labels(
    utt2lang: str | os.PathLike | None = None, text: str | os.PathLike | None = None
) -> dict[str, dict[str, str]]:
    """{label name: {uid: label}} from the given files (`registry.LABELS`); ManifestError
    (`file:line: reason`) on a missing file or a malformed line."""
    labels = {}
    if utt2lang is not None:
        labels["lang"] = read_kv(utt2lang)
    if text is not None:
        labels["text"] = read_kv(text, allow_empty_value=True)  # official text may be empty
    return labels


def check_labels(names: Mapping[str, Sequence[str]], labels: Mapping[str, Mapping]) -> None:
    """ValueError when a metric ({name: label names it needs}) needs a label file not given."""
    for name, needed in names.items():
        missing = [label for label in needed if label not in labels]
        if missing:
            flags = ", ".join(f"{LABELS[label]} FILE ({label})" for label in missing)
            raise ValueError(f"metric '{name}' needs per-utterance labels: pass {flags}")


# --- one scoring pass (enhanced or noisy) ------------------------------------------------------


@dataclasses.dataclass
class _Utterance:
    uid: str
    est_path: str | None  # None: missing in inf
    ref_path: str | None  # None: missing in ref (or no references)
    sample_rate: int = 0  # Hz, of the estimate
    num_samples: int = 0  # estimate length (header)
    blocked: dict[str, str] = dataclasses.field(default_factory=dict)  # metric -> reason
    labels: dict[str, str] = dataclasses.field(default_factory=dict)  # label name -> value


class _Errors:
    """errors.tsv rows; an (utterance, metric) pair is blocked at most once (first reason wins)."""

    def __init__(self, specs: Sequence[MetricSpec]):
        self.all = [s.name for s in specs]
        self.intrusive = [s.name for s in specs if s.intrusive]
        self.rows: list[tuple[str, str, str]] = []

    def block(self, utt: _Utterance, names: Sequence[str], reason: str) -> None:
        names = [n for n in names if n not in utt.blocked]
        if not names:
            return
        for name in names:
            utt.blocked[name] = reason
        if len(names) == len(self.all):
            self.rows.append((utt.uid, ALL_METRICS, reason))
        else:
            self.rows += [(utt.uid, name, reason) for name in names]


@dataclasses.dataclass
class PassResult:
    scores: dict[str, dict[str, float]]  # output -> uid -> value (NaN when not computed)
    errors: list[tuple[str, str, str]]  # (uid, metric or '*', reason)
    shapes: set[tuple[int, int, int]]  # (sample_rate, batch, time) of the metric calls
    num_utterances: int
    metric_time_s: dict[str, float]  # wall time inside each metric (compiles included)


def _header(path: str | None) -> tuple[int, int] | str | None:
    """(sample_rate, num_samples), an error message, or None without a path."""
    if path is None:
        return None
    if not os.path.exists(path):
        return f"{path}: no such file"
    try:
        sample_rate, num_samples, _ = audio_info(path)
    except AudioFileError as e:
        return str(e)
    return sample_rate, num_samples


def _check_headers(
    utt: _Utterance, headers, specs: Sequence[MetricSpec], errors: _Errors, has_ref: bool
) -> None:
    est, ref = headers
    if utt.est_path is None:
        errors.block(utt, errors.all, MISSING_IN_INF)
        return
    if isinstance(est, str):
        errors.block(utt, errors.all, f"{UNREADABLE}: {est}")
        return
    utt.sample_rate, utt.num_samples = est
    if has_ref and utt.ref_path is None:
        errors.block(utt, errors.intrusive, MISSING_IN_REF)
    elif isinstance(ref, str):
        errors.block(utt, errors.intrusive, f"{UNREADABLE}: {ref}")
    elif ref is not None and ref[0] != utt.sample_rate:
        detail = f"ref {ref[0]} Hz, inf {utt.sample_rate} Hz"
        errors.block(utt, errors.intrusive, f"{RATE_MISMATCH}: {detail}")
    elif ref is not None and ref[1] != utt.num_samples:
        detail = f"ref {ref[1]}, inf {utt.num_samples} samples"
        errors.block(utt, errors.intrusive, f"{LENGTH_MISMATCH}: {detail}")
    if utt.sample_rate <= 0:
        errors.block(utt, errors.all, f"{UNREADABLE}: {utt.est_path}: no sample rate in the header")
        return
    duration_s = utt.num_samples / utt.sample_rate
    for spec in specs:
        min_samples = spec.min_samples(utt.sample_rate)
        if utt.num_samples < min_samples:
            detail = f"{duration_s:.3g} s < {min_samples / utt.sample_rate:.3g} s"
            if min_samples == spec.min_num_samples:  # the frame rule, not the duration, binds
                detail += f" ({min_samples} samples at {utt.sample_rate} Hz)"
            errors.block(utt, [spec.name], f"{TOO_SHORT}: {detail}")


def _plan(utts: Sequence[_Utterance], batch_size: int) -> list[list[_Utterance]]:
    """Batches of one sampling rate each, sorted by length (utterances with any metric left)."""
    by_rate: dict[int, list[_Utterance]] = collections.defaultdict(list)
    for utt in utts:
        if utt.est_path is not None and utt.sample_rate:
            by_rate[utt.sample_rate].append(utt)
    batches = []
    for rate in sorted(by_rate):
        group = sorted(by_rate[rate], key=lambda u: u.num_samples)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


def _load(path: str) -> np.ndarray | str:
    """Channel 0 as float32 [T], or an error message."""
    try:
        audio, _ = read_audio(path, first_channel=True)
    except AudioFileError as e:
        return str(e)
    return audio[0]


def _load_utterance(utt: _Utterance, need_ref: bool):
    return _load(utt.est_path), (_load(utt.ref_path) if need_ref else None)


def _check_labels(utt: _Utterance, fns: Mapping[str, MetricFn], labels, errors: _Errors) -> None:
    """Look up the utterance's labels (by uid, else its `fileid...` part); block the metrics whose
    labels it lacks."""
    for name, fn in fns.items():
        for label in context_labels(fn) or ():
            table = labels[label]
            value = table.get(utt.uid, table.get(breakdown_lib.normalise_id(utt.uid)))
            if value is None:
                errors.block(utt, [name], f"{MISSING_LABEL}: no {label} in {LABELS[label]}")
            else:
                utt.labels[label] = value


def _check_audio(utt: _Utterance, est, ref, errors: _Errors, est_list: str) -> None:
    """Checks that need the samples (after decoding)."""
    if isinstance(est, str):
        errors.block(utt, errors.all, f"{UNREADABLE}: {est}")
    elif len(est) != utt.num_samples:
        detail = f"{utt.est_path}: decoded {len(est)} samples, header says {utt.num_samples}"
        errors.block(utt, errors.all, f"{UNREADABLE}: {detail}")
    elif not np.all(np.isfinite(est)):
        errors.block(utt, errors.all, f"{NON_FINITE}: in the {est_list} audio")
    if ref is None:
        return
    if isinstance(ref, str):
        errors.block(utt, errors.intrusive, f"{UNREADABLE}: {ref}")
    elif len(ref) != utt.num_samples:
        detail = f"{utt.ref_path}: decoded {len(ref)} samples, header says {utt.num_samples}"
        errors.block(utt, errors.intrusive, f"{UNREADABLE}: {detail}")
    elif not np.all(np.isfinite(ref)):
        errors.block(utt, errors.intrusive, f"{NON_FINITE}: in the ref_scp audio")
    elif np.max(np.abs(ref), initial=0.0) < SILENCE_THRESHOLD:
        errors.block(utt, errors.intrusive, SILENT_REF)


def _run_batch(
    batch, loaded, specs, fns, errors: _Errors, result: PassResult, batch_size: int, est_list: str
) -> None:
    """Pad one batch, run every metric on the rows it may see, store values and reasons."""
    for utt, (est, ref) in zip(batch, loaded):
        _check_audio(utt, est, ref, errors, est_list)
    sample_rate = batch[0].sample_rate
    num_rows = min(batch_size, 1 << (len(batch) - 1).bit_length())  # power of two: few shapes
    num_time = padded_num_samples(max(u.num_samples for u in batch))
    est_batch = np.zeros((num_rows, num_time), np.float32)
    ref_batch = np.zeros((num_rows, num_time), np.float32) if errors.intrusive else None
    lengths = np.zeros(num_rows, np.int32)
    for i, (utt, (est, ref)) in enumerate(zip(batch, loaded)):
        lengths[i] = utt.num_samples
        if isinstance(est, np.ndarray) and len(est) == utt.num_samples:
            est_batch[i, : len(est)] = np.nan_to_num(est)  # blocked rows never reach a metric
        if isinstance(ref, np.ndarray) and len(ref) == utt.num_samples:
            ref_batch[i, : len(ref)] = np.nan_to_num(ref)
    for spec in specs:
        valid = [i for i, utt in enumerate(batch) if spec.name not in utt.blocked]
        if not valid:
            continue
        # Rows the metric may not see (blocked, or batch padding) repeat a valid row: fixed shapes.
        index = np.full(num_rows, valid[0])
        index[valid] = valid
        ref_in = ref_batch[index] if spec.intrusive else None
        kwargs = {}
        needed = context_labels(fns[spec.name])
        if needed is not None:
            rows = [batch[i] for i in index]
            kwargs["context"] = MetricContext(
                uids=tuple(u.uid for u in rows),
                labels={k: tuple(u.labels[k] for u in rows) for k in needed},
            )
        result.shapes.add((sample_rate, num_rows, num_time))
        start = time.perf_counter()
        try:
            values, reasons = fns[spec.name](
                ref_in, est_batch[index], lengths[index], sample_rate, **kwargs
            )
            values = {o: np.asarray(values[o], np.float64).reshape(-1) for o in spec.outputs}
        except Exception as e:  # a metric bug must not lose the other metrics' scores
            log.warning("metric %s failed on a batch at %d Hz: %r", spec.name, sample_rate, e)
            reason = f"{METRIC_FAILED}: {type(e).__name__}: {e}"
            for i in valid:
                errors.block(batch[i], [spec.name], reason)
            continue
        finally:
            result.metric_time_s[spec.name] += time.perf_counter() - start
        for i in valid:
            utt = batch[i]
            row = {o: float(values[o][i]) for o in spec.outputs}
            infinite = [f"{o} = {v!r}" for o, v in row.items() if math.isinf(v)]
            for output, value in row.items():
                result.scores[output][utt.uid] = math.nan if math.isinf(value) else value
            reason = reasons[i] if i < len(reasons) else ""
            if reason:
                errors.rows.append((utt.uid, spec.name, reason))
            elif infinite:
                reason = f"{NON_FINITE_SCORE}: {', '.join(infinite)}"
                errors.rows.append((utt.uid, spec.name, reason))
            elif any(math.isnan(v) for v in row.values()):
                errors.rows.append((utt.uid, spec.name, METRIC_NAN))


def score_pass(
    est_paths: Mapping[str, str],
    ref_paths: Mapping[str, str] | None,
    specs: Sequence[MetricSpec],
    fns: Mapping[str, MetricFn],
    *,
    batch_size: int = 16,
    num_workers: int = 2,
    labels: Mapping[str, Mapping[str, str]] | None = None,
    est_list: str = "inf_scp",
    desc: str = "scoring",
    use_progress_bar: bool = True,
) -> PassResult:
    """Score `est_paths` (uid -> audio path, in output order) against `ref_paths`, every metric.
    `labels` ({label name: {uid: value}}) serve the metrics that take a context; `est_list` names
    the list est_paths came from (in reasons)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    errors = _Errors(specs)
    has_ref = ref_paths is not None
    ref_paths = ref_paths or {}
    utts = [_Utterance(uid, path, ref_paths.get(uid)) for uid, path in est_paths.items()]
    utts += [_Utterance(uid, None, path) for uid, path in ref_paths.items() if uid not in est_paths]
    outputs = output_names(specs)
    result = PassResult(
        scores={o: {u.uid: math.nan for u in utts} for o in outputs},
        errors=errors.rows,
        shapes=set(),
        num_utterances=len(utts),
        metric_time_s={s.name: 0.0 for s in specs},
    )
    progress = tqdm(total=len(utts), unit="utt", desc=desc, disable=not use_progress_bar)

    def read_headers(utt: _Utterance):
        return _header(utt.est_path), _header(utt.ref_path if errors.intrusive else None)

    with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
        for utt, header in zip(utts, pool.map(read_headers, utts)):
            _check_headers(utt, header, specs, errors, has_ref)
            _check_labels(utt, fns, labels or {}, errors)
        batches = _plan(utts, batch_size)
        progress.update(len(utts) - sum(len(b) for b in batches))  # nothing left to compute

        def submit(batch):
            return [
                pool.submit(_load_utterance, u, any(n not in u.blocked for n in errors.intrusive))
                for u in batch
            ]

        pending = collections.deque(submit(b) for b in batches[:PREFETCH_BATCHES])
        for k, batch in enumerate(batches):
            loaded = [f.result() for f in pending.popleft()]
            if k + PREFETCH_BATCHES < len(batches):
                pending.append(submit(batches[k + PREFETCH_BATCHES]))
            _run_batch(batch, loaded, specs, fns, errors, result, batch_size, est_list)
            progress.update(len(batch))
    progress.close()
    return result


def _close(fns: Mapping[str, MetricFn]) -> None:
    for fn in fns.values():
        if hasattr(fn, "close"):
            fn.close()


# --- outputs ------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return " ".join(str(text).split())  # errors.tsv fields hold no tabs or line breaks


def write_errors(path: str | os.PathLike, rows: Sequence[tuple[str, str, str]]) -> None:
    """errors.tsv: header `uid metric reason`, one tab-separated row per (utterance, metric)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(report_lib.ERRORS_COLUMNS) + "\n")
        for row in rows:
            f.write("\t".join(_clean(x) for x in row) + "\n")


def _write_pass(out_dir: Path, specs, result: PassResult) -> dict[str, float]:
    for output, values in result.scores.items():
        write_scores(out_dir / f"{output}.scp", values)
    means = nanmean_scores(result.scores)
    write_results(out_dir / "RESULTS.txt", means)
    write_errors(out_dir / report_lib.ERRORS_FILE, result.errors)
    return means


def format_summary(summary: Mapping) -> str:
    """The lines printed at the end of a run."""
    lines = [
        f"scored {summary['num_utterances']} utterances in {summary['elapsed_s']:.1f} s "
        f"-> {summary['output_dir']}"
    ]
    for label, means_key, counts_key in (
        ("enhanced", "means", "error_counts"),
        ("noisy", "noisy_means", "noisy_error_counts"),
    ):
        if summary.get(means_key) is None:
            continue
        lines.append(f"{label}:")
        lines += [f"  {name}: {value:.4f}" for name, value in summary[means_key].items()]
        counts = summary[counts_key]
        if counts:
            lines.append("  errors (utterances per reason, see errors.tsv):")
            lines += [f"    {kind}: {n}" for kind, n in counts.items()]
        else:
            lines.append("  no errors")
    if summary.get("metric_time_s"):
        times = ", ".join(f"{name} {t:.1f} s" for name, t in summary["metric_time_s"].items())
        lines.append(f"time in metrics (compiles included): {times}")
    return "\n".join(lines)


def score(
    ref_scp: str | os.PathLike | None,
    inf_scp: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    metrics: Sequence[str] | None = None,
    meta_tsv: str | os.PathLike | None = None,
    utt2lang: str | os.PathLike | None = None,
    text: str | os.PathLike | None = None,
    noisy_scp: str | os.PathLike | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    options: MetricOptions | None = None,
    make_report: bool = True,
    use_progress_bar: bool = True,
) -> dict:
    """Score inf.scp (uid -> enhanced audio) against ref_scp (uid -> reference; None: non-intrusive
    metrics only) with `metrics` (names; default every built-in metric) into `output_dir`.
    meta_tsv (breakdown), utt2lang (breakdown languages, `lang` labels) and text (`text` labels)
    are read first: ValueError (`file:line: reason`) before any metric is built.

    Returns a dict: output_dir, num_utterances, outputs (names), means ({output: nanmean}),
    scores ({output: {uid: value}}), errors ([(uid, metric, reason)]), error_counts ({kind:
    utterances}), batch_shapes (sorted (sample_rate, batch, time)), elapsed_s, and noisy_means /
    noisy_scores / noisy_errors / noisy_error_counts (None without `noisy_scp`).
    """
    start = time.perf_counter()
    options = options or MetricOptions()
    specs = resolve_metrics(metrics, has_ref=ref_scp is not None)
    if not specs:
        raise ValueError("no metric to compute")
    plugins = {s.name for s in specs if s.is_plugin}
    for name in options.plugin_options:
        if name not in plugins:
            raise ValueError(
                f"--plugin_option {name}.*: '{name}' is not a plug-in metric being run"
            )
    ref_paths = report_lib.read_audio_list(ref_scp) if ref_scp is not None else None
    est_paths = report_lib.read_audio_list(inf_scp)
    noisy_paths = report_lib.read_audio_list(noisy_scp) if noisy_scp is not None else None
    meta_rows = read_meta_tsv(meta_tsv) if meta_tsv is not None else None
    labels = read_labels(utt2lang, text)
    check_labels({s.name: s.labels for s in specs}, labels)
    fns = build_metrics(specs, options)  # fails fast (plug-ins)
    try:
        check_labels({n: context_labels(fn) or () for n, fn in fns.items()}, labels)
    except ValueError:
        _close(fns)
        raise
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        batch_size=batch_size,
        num_workers=num_workers,
        labels=labels,
        use_progress_bar=use_progress_bar,
    )
    try:
        result = score_pass(est_paths, ref_paths, specs, fns, desc="enhanced", **kwargs)
        noisy = None
        if noisy_paths is not None:
            noisy = score_pass(
                noisy_paths, ref_paths, specs, fns, desc="noisy", est_list="noisy_scp", **kwargs
            )
    finally:
        _close(fns)
    means = _write_pass(out_dir, specs, result)
    noisy_means = _write_pass(out_dir / "noisy", specs, noisy) if noisy else None
    summary = {
        "output_dir": str(out_dir),
        "num_utterances": result.num_utterances,
        "inputs": {
            "ref_scp": None if ref_scp is None else str(ref_scp),
            "inf_scp": str(inf_scp),
            "noisy_scp": None if noisy_scp is None else str(noisy_scp),
            "meta_tsv": None if meta_tsv is None else str(meta_tsv),
            "utt2lang": None if utt2lang is None else str(utt2lang),
            "text": None if text is None else str(text),
        },
        "metrics": [
            {
                "name": s.name,
                "outputs": list(s.outputs),
                "intrusive": s.intrusive,
                "higher_is_better": s.higher_is_better,
            }
            for s in specs
        ],
        "means": means,
        "error_counts": report_lib.count_errors(result.errors),
        "noisy_num_utterances": noisy.num_utterances if noisy else None,
        "noisy_means": noisy_means,
        "noisy_error_counts": report_lib.count_errors(noisy.errors) if noisy else None,
        "metric_time_s": {
            name: t + (noisy.metric_time_s[name] if noisy else 0.0)
            for name, t in result.metric_time_s.items()
        },
        "elapsed_s": time.perf_counter() - start,
    }
    with open(out_dir / report_lib.SUMMARY_FILE, "w", encoding="utf-8") as f:
        json.dump(breakdown_lib.json_safe(summary), f, indent=2)
    if meta_rows is not None:
        languages = labels.get("lang", {})
        breakdown_lib.write_breakdown(out_dir, meta_rows, utt2lang=languages, scores=result.scores)
        if noisy is not None:
            breakdown_lib.write_breakdown(
                out_dir / "noisy", meta_rows, utt2lang=languages, scores=noisy.scores
            )
    if make_report:
        report_lib.make_report(out_dir)
    summary.update(
        outputs=output_names(specs),
        scores=result.scores,
        errors=result.errors,
        batch_shapes=sorted(result.shapes),
        noisy_scores=noisy.scores if noisy else None,
        noisy_errors=noisy.errors if noisy else None,
        elapsed_s=time.perf_counter() - start,
    )
    return summary


# --- command line --------------------------------------------------------------------------------


def parse_assignments(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    """`name=value` flag values -> {name: value} (metric names lower-cased)."""
    out = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"--{flag} expects name=value, got {item!r}")
        out[name.strip().lower()] = value.strip()
    return out


def parse_plugin_options(values: Sequence[str] | None) -> dict[str, dict[str, str]]:
    """`metric.key=value` flag values -> {metric: {key: value}} (metric lower-cased; values are
    strings, passed to the plug-in's loader as keyword arguments)."""
    out: dict[str, dict[str, str]] = {}
    for item in values or ():
        target, sep, value = item.partition("=")
        name, dot, key = target.strip().partition(".")
        if not sep or not dot or not name or not key.isidentifier():
            raise ValueError(f"--plugin_option expects metric.key=value, got {item!r}")
        out.setdefault(name.lower(), {})[key] = value.strip()
    return out


def _define_flags() -> None:
    """Flags are defined only when this module is the program (importing it defines none)."""
    from absl import flags

    flags.DEFINE_string(
        "ref_scp", None, "uid -> reference audio (spk1.scp); omit for non-intrusive."
    )
    flags.DEFINE_string("inf_scp", None, "uid -> enhanced audio (inf.scp).")
    flags.DEFINE_string("output_dir", None, "Where <OUTPUT>.scp, RESULTS.txt, ... go.")
    flags.DEFINE_list("metrics", None, "Metric names (default: every built-in metric).")
    flags.DEFINE_string("meta_tsv", None, "meta.tsv of the set: writes BREAKDOWN.md.")
    flags.DEFINE_string(
        "utt2lang", None, "uid (or speech uid) -> language: breakdown, plug-in `lang` labels."
    )
    flags.DEFINE_string("text", None, "uid -> transcript: plug-in `text` labels (char_acc).")
    flags.DEFINE_string(
        "noisy_scp", None, "uid -> noisy input (wav.scp): also scored, into noisy/."
    )
    flags.DEFINE_integer("batch_size", 16, "Utterances per metric call.")
    flags.DEFINE_integer("num_workers", 2, "Threads decoding audio.")
    flags.DEFINE_integer("pesq_workers", None, "PESQ processes (default: all cores).")
    flags.DEFINE_multi_string("metric_weights", [], "name=/local/weights (repeatable).")
    flags.DEFINE_multi_string("metric_loader", [], "name=package.module:function (repeatable).")
    flags.DEFINE_multi_string(
        "plugin_option", [], "metric.key=value: loader keyword option of a plug-in (repeatable)."
    )
    flags.DEFINE_bool("report", True, "Write report.md and figures/.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv) -> None:
    from absl import app, flags

    from urgent_jax import prepare_runtime

    f = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(
            f"unexpected arguments {argv[1:]} "
            "(repeat --metric_weights / --metric_loader / --plugin_option once per value)"
        )
    for name in ("inf_scp", "output_dir"):
        if not f[name].value:
            raise app.UsageError(f"--{name} is required")
    try:
        options = MetricOptions(
            weights=parse_assignments(f.metric_weights, "metric_weights"),
            loaders=parse_assignments(f.metric_loader, "metric_loader"),
            pesq_workers=f.pesq_workers,
            plugin_options=parse_plugin_options(f.plugin_option),
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    prepare_runtime()
    try:
        summary = score(
            f.ref_scp,
            f.inf_scp,
            f.output_dir,
            metrics=f.metrics,
            meta_tsv=f.meta_tsv,
            utt2lang=f.utt2lang,
            text=f.text,
            noisy_scp=f.noisy_scp,
            batch_size=f.batch_size,
            num_workers=f.num_workers,
            options=options,
            make_report=f.report,
            use_progress_bar=f.progress,
        )
    except (MetricUnavailableError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(format_summary(summary))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
