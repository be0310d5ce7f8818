"""Batched quality scoring of a speech corpus into scores.tsv (data curation, REFERENCE.md §5).

    python -m urgent_jax.curation.score --speech_scp speech_sources.scp --out scores.tsv \
        [--batch_size 8] [--num_workers 2] [--shard_index P --shard_count N] [--noprogress] \
        [--nodistill_mos]

`speech_scp` holds `uid fs path` (the Track 1 source-list format, §1.1) or `uid path` lines.
Per utterance (channel 0, at the file's own rate) scores.tsv gets, tab separated with a header:
uid, fs, duration_s, dnsmos_sig/bak/ovrl/p808 (metrics.dnsmos), distill_mos (metrics.distillmos),
bandwidth_hz and target_fs (audio.bandwidth, §5.1), speech_ratio, clipping_ratio, snr_db,
dc_offset (audio.quality), path.

Distill-MOS is the costliest column on long utterances: its crop rule (the reference's) takes
7.68 s crops at most 1 s apart, 17 crops for a 23 s utterance, which made it ~5x DNSMOS's time there
(README). `--nodistill_mos` (`distill_mos=False`) skips it and writes NaN in that column, for rules
that do not need it (the URGENT 2025 ones use DNSMOS and the speech ratio); the filter refuses rules
on a column with no values.

Batching: headers are read first; utterances are grouped by rate, sorted by length, and batched,
full batches of one DNSMOS segment count first (`plan_batches`);
each batch is padded to one of 4 lengths per octave and a power-of-two row count (the padding of
evaluate.score), and DNSMOS gets the segment count its batch needs, so compiles stay bounded
(`summary["shapes"]` lists them). A Grain dataset over the planned batches decodes audio in
`num_workers` threads ahead of the jitted scoring in the main process.

Multi-host: each process scores the uids `sorted(uids)[shard_index::shard_count]` (default
jax.process_index() / process_count()) into `<out stem>.<p>.tsv` / `errors.<p>.tsv`, then writes
`<out stem>.<p>.done`; whichever process finds every part done merges them into `out` and
`errors.tsv` (one row per uid). One process writes `out` directly.

Resume: rows already in the output (or part) and in its errors file are skipped; results are
appended after every batch, so an interrupted run loses at most one batch.

Bad files (missing, unreadable, rate different from the list, empty, shorter than 0.1 s,
non-finite, silent) go to errors.tsv (uid, path, reason) and never stop the run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from urgent_jax.audio.bandwidth import estimate_bandwidth, target_sample_rate
from urgent_jax.audio.io import AudioFileError, audio_info
from urgent_jax.audio.quality import quality_features
from urgent_jax.data.sources import BadFileError, read_checked
from urgent_jax.evaluate.score import padded_num_samples

COLUMNS = (
    "uid",
    "fs",
    "duration_s",
    "dnsmos_sig",
    "dnsmos_bak",
    "dnsmos_ovrl",
    "dnsmos_p808",
    "distill_mos",
    "bandwidth_hz",
    "target_fs",
    "speech_ratio",
    "clipping_ratio",
    "snr_db",
    "dc_offset",
    "path",
)
ERROR_COLUMNS = ("uid", "path", "reason")
MIN_DURATION_S = 0.1  # DNSMOS / Distill-MOS minimum (metrics.registry)

log = logging.getLogger(__name__)


# --- inputs and outputs ---------------------------------------------------------------------------


def read_speech_scp(path: str | os.PathLike) -> dict[str, tuple[int | None, str]]:
    """uid -> (fs or None, path) from `uid fs path` or `uid path` lines (relative paths are taken
    from the current directory if they exist there, else from the list's directory)."""
    base = Path(path).parent
    out = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) == 3 and fields[1].isdigit():
                uid, fs, file_path = fields[0], int(fields[1]), fields[2]
            elif len(fields) == 2:
                uid, fs, file_path = fields[0], None, fields[1]
            else:
                raise ValueError(f"{path}:{line_no}: expected 'uid [fs] path', got {line!r}")
            if uid in out:
                raise ValueError(f"{path}:{line_no}: duplicate uid {uid}")
            if not (os.path.isabs(file_path) or os.path.exists(file_path)):
                file_path = str(base / file_path)
            out[uid] = (fs, file_path)
    return out


def read_table(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a tab-separated file with a header (empty if the file does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) == len(header):  # a line cut by a crash mid-write is dropped (rescored)
            rows.append(dict(zip(header, fields)))
    return rows


def read_scores(path: str | os.PathLike) -> dict[str, dict]:
    """scores.tsv -> uid -> row with numbers as float (fs, target_fs as int)."""
    out = {}
    for row in read_table(path):
        parsed = {}
        for key, value in row.items():
            if key in ("uid", "path"):
                parsed[key] = value
            elif key in ("fs", "target_fs"):
                parsed[key] = int(value)
            else:
                parsed[key] = float(value)
        out[row["uid"]] = parsed
    return out


class _TableWriter:
    """Appends rows to a tab-separated file, writing the header if the file is new or empty."""

    def __init__(self, path: Path, columns: Sequence[str]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = tuple(columns)
        is_new = not path.exists() or path.stat().st_size == 0
        if not is_new:  # a crash can leave a partial last line: end it so the next row is whole
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    is_new = None
        self.file = open(path, "a", encoding="utf-8", newline="\n")
        if is_new is None:
            self.file.write("\n")
        elif is_new:
            self.file.write("\t".join(self.columns) + "\n")

    def write(self, row: dict) -> None:
        self.file.write("\t".join(_format(row[c]) for c in self.columns) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _format(value) -> str:
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return " ".join(str(value).split())  # no tabs or line breaks inside a field


def part_paths(out: str | os.PathLike, shard_index: int, shard_count: int) -> tuple[Path, ...]:
    """(scores, errors, done marker) of one shard; the outputs themselves for a single shard."""
    out = Path(out)
    if shard_count == 1:
        return out, out.parent / "errors.tsv", out.parent / f"{out.stem}.done"
    return (
        out.parent / f"{out.stem}.{shard_index}.tsv",
        out.parent / f"errors.{shard_index}.tsv",
        out.parent / f"{out.stem}.{shard_index}.done",
    )


def merge_parts(out: str | os.PathLike, shard_count: int) -> bool:
    """Merge every shard's scores and errors into `out` / errors.tsv (sorted by uid) if all shards
    are done; returns whether it merged."""
    parts = [part_paths(out, p, shard_count) for p in range(shard_count)]
    if not all(done.exists() for _, _, done in parts):
        return False
    scores, errors = {}, {}
    for score_path, error_path, _ in parts:
        scores.update({r["uid"]: r for r in read_table(score_path)})
        errors.update({r["uid"]: r for r in read_table(error_path)})
    out = Path(out)
    for path, rows, columns in (
        (out, scores, COLUMNS),
        (out.parent / "errors.tsv", errors, ERROR_COLUMNS),
    ):
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write("\t".join(columns) + "\n")
            for uid in sorted(rows):
                f.write("\t".join(rows[uid][c] for c in columns) + "\n")
        os.replace(tmp, path)
    return True


# --- planning and loading -------------------------------------------------------------------------


@dataclasses.dataclass
class _Item:
    uid: str
    path: str
    fs: int  # Hz (the list's, else the header's)
    num_samples: int


def _header(uid: str, fs: int | None, path: str) -> _Item | tuple[str, str]:
    """The planned item, or (uid, reason)."""
    if not os.path.exists(path):
        return uid, "missing: no such file"
    try:
        rate, num_samples, _ = audio_info(path)
    except AudioFileError as e:
        return uid, f"unreadable: {e}"
    if fs is not None and rate != fs:
        return uid, f"wrong_rate: file rate {rate} Hz, list says {fs} Hz"
    if num_samples < MIN_DURATION_S * rate:
        return uid, f"too_short: {num_samples} samples < {MIN_DURATION_S} s"
    return _Item(uid, path, rate, num_samples)


def plan_batches(items: Sequence[_Item], batch_size: int) -> list[list[_Item]]:
    """Batches of one rate each, sorted by length (then uid, so plans are deterministic); every
    full batch that one DNSMOS segment count can fill holds only that count.

    DNSMOS scores every row of a batch over the batch's largest segment count, and that count is
    not monotonic in length (a 3.3 s clip is doubled twice into 4 segments, a 4.6 s clip once into
    1), so mixed batches score padding segments. Each count's items fill whole batches of their
    own; the fewer than batch_size left over per count are batched together by length, so small
    corpora do not pay a compile per (count, length) pair.
    """
    from urgent_jax.metrics.dnsmos import required_segments

    batches = []
    for rate in sorted({i.fs for i in items}):
        group = sorted((i for i in items if i.fs == rate), key=lambda i: (i.num_samples, i.uid))
        # (segment count, position in length order), one count per item
        counted = sorted((required_segments([i.num_samples], rate), k) for k, i in enumerate(group))
        rest = []
        for _, same in itertools.groupby(counted, key=lambda c: c[0]):
            same = [group[k] for _, k in same]  # in length order
            full = len(same) - len(same) % batch_size
            batches += [same[k : k + batch_size] for k in range(0, full, batch_size)]
            rest += same[full:]
        rest.sort(key=lambda i: (i.num_samples, i.uid))
        batches += [rest[k : k + batch_size] for k in range(0, len(rest), batch_size)]
    return batches


class _LoadBatch:
    """Grain map: planned batch -> (items, float32 [rows, time] padded audio, lengths, reasons)."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def __call__(self, batch: list[_Item]):
        rows = min(self.batch_size, 1 << (len(batch) - 1).bit_length())  # few shapes
        num_time = padded_num_samples(max(i.num_samples for i in batch))
        audio = np.zeros((rows, num_time), np.float32)
        lengths = np.zeros(rows, np.int32)
        reasons = []
        for k, item in enumerate(batch):
            try:
                x = read_checked(item.path, item.fs, min_num_samples=1)
            except BadFileError as e:
                reasons.append(f"{e.reason}: {e.detail}" if e.detail else e.reason)
                continue
            if len(x) != item.num_samples:
                reasons.append(f"unreadable: decoded {len(x)} samples, header {item.num_samples}")
                continue
            audio[k, : len(x)], lengths[k] = x, len(x)
            reasons.append("")
        return batch, audio, lengths, reasons


def fill_rows(valid: Sequence[int], num_rows: int) -> np.ndarray:
    """Row index that keeps the `valid` rows and fills the others (bad files, padding rows) with
    the first valid one, so every scored row holds real audio."""
    index = np.full(num_rows, valid[0])
    index[list(valid)] = valid
    return index


# --- scoring --------------------------------------------------------------------------------------


class Scorer:
    """The jitted per-batch scoring (metrics built once); `shapes` records the compiled shapes."""

    def __init__(self, distill_mos: bool = True):
        """distill_mos=False: the distill_mos column is NaN (the model is not run or loaded)."""
        from urgent_jax.metrics import dnsmos, distillmos

        self._dnsmos = dnsmos
        self._dnsmos_params = dnsmos.load_dnsmos_params()
        self.distill_mos = distill_mos
        self._distill = None
        if distill_mos:
            self._distill_params = distillmos.load_params()  # an argument: no constant folding
            self._distill = jax.jit(distillmos.distill_mos, static_argnames="sample_rate")
        self.shapes: set[tuple] = set()

    def __call__(self, audio: np.ndarray, lengths: np.ndarray, sample_rate: int) -> dict:
        """audio [B, T] (every row valid, lengths >= 1) -> {column: np.ndarray [B]}."""
        segs = self._dnsmos.required_segments(lengths, sample_rate)
        self.shapes.add((sample_rate,) + audio.shape + (segs,))
        mos = self._dnsmos.dnsmos(
            audio, lengths, sample_rate, params=self._dnsmos_params, max_segs=segs
        )
        out = {f"dnsmos_{k}": mos[k] for k in ("sig", "bak", "ovrl", "p808")}
        if self._distill is None:
            out["distill_mos"] = np.full(len(lengths), np.nan)
        else:
            out["distill_mos"] = self._distill(
                audio, lengths, sample_rate=sample_rate, params=self._distill_params
            )
        out["bandwidth_hz"] = estimate_bandwidth(audio, lengths, sample_rate)
        out.update(quality_features(audio, lengths, sample_rate))
        out = {k: np.asarray(v, np.float64) for k, v in out.items()}
        out["target_fs"] = target_sample_rate(out["bandwidth_hz"])
        return out


def _default_shard() -> tuple[int, int]:
    return jax.process_index(), jax.process_count()


def score_corpus(
    speech_scp: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 8,
    num_workers: int = 2,
    shard_index: int | None = None,
    shard_count: int | None = None,
    use_progress_bar: bool = True,
    scorer: Scorer | None = None,
    distill_mos: bool = True,
) -> dict:
    """Score the utterances of `speech_scp` into `out` (scores.tsv) and errors.tsv beside it.
    distill_mos=False writes NaN for Distill-MOS instead of running it (ignored with `scorer`).

    Returns a summary dict: out, shard_index, shard_count, num_listed (this shard), num_skipped
    (already done), num_scored, num_errors, audio_s (scored now), elapsed_s, hours_per_hour,
    shapes (compiled (fs, rows, time, dnsmos segments)), merged (whether `out` holds every shard).
    """
    start = time.perf_counter()
    if shard_index is None or shard_count is None:
        shard_index, shard_count = _default_shard()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    listed = read_speech_scp(speech_scp)
    uids = sorted(listed)[shard_index::shard_count]
    score_path, error_path, done_path = part_paths(out, shard_index, shard_count)
    finished = {r["uid"] for r in read_table(score_path)} | {
        r["uid"] for r in read_table(error_path)
    }
    todo = [u for u in uids if u not in finished]
    scores_out = _TableWriter(score_path, COLUMNS)
    errors_out = _TableWriter(error_path, ERROR_COLUMNS)
    num_scored = num_errors = 0
    audio_s = 0.0

    def error(uid: str, reason: str) -> None:
        nonlocal num_errors
        errors_out.write({"uid": uid, "path": listed[uid][1], "reason": reason})
        num_errors += 1

    with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
        headers = list(pool.map(lambda u: _header(u, *listed[u]), todo))
    items = []
    for h in headers:
        if isinstance(h, _Item):
            items.append(h)
        else:
            error(*h)
    errors_out.flush()
    batches = plan_batches(items, batch_size)
    scorer = scorer or Scorer(distill_mos)
    skipped = () if getattr(scorer, "distill_mos", True) else ("distill_mos",)
    scored = [c for c in COLUMNS[2:-1] if c not in skipped]  # a NaN there is an error
    total_h = sum(i.num_samples / i.fs for i in items) / 3600
    progress = tqdm(
        total=total_h,
        desc="scoring",
        disable=not use_progress_bar,
        bar_format="{l_bar}{bar}| {n:.4f}/{total:.4f} h of audio [{elapsed}<{remaining}]{postfix}",
    )
    try:
        if batches:
            import grain

            ds = grain.MapDataset.source(batches).map(_LoadBatch(batch_size))
            options = grain.ReadOptions(num_threads=max(1, num_workers), prefetch_buffer_size=2)
            loader = ds.to_iter_dataset(options)
            for batch, audio, lengths, reasons in loader:
                valid = [k for k, r in enumerate(reasons) if not r]
                for k, r in enumerate(reasons):
                    if r:
                        error(batch[k].uid, r)
                if valid:
                    index = fill_rows(valid, len(lengths))
                    values = scorer(audio[index], lengths[index], batch[0].fs)
                    for k in valid:
                        row = {c: float(v[k]) for c, v in values.items()}
                        row.update(
                            uid=batch[k].uid,
                            path=batch[k].path,
                            fs=batch[k].fs,
                            target_fs=int(values["target_fs"][k]),
                            duration_s=batch[k].num_samples / batch[k].fs,
                        )
                        if not all(math.isfinite(row[c]) for c in scored):
                            error(batch[k].uid, "non_finite: a score is NaN")
                            continue
                        scores_out.write(row)
                        num_scored += 1
                        audio_s += row["duration_s"]
                scores_out.flush()
                errors_out.flush()
                progress.update(sum(i.num_samples / i.fs for i in batch) / 3600)
                elapsed = time.perf_counter() - start
                progress.set_postfix_str(f"{progress.n / (elapsed / 3600):.1f} h audio/h")
    finally:
        progress.close()
        scores_out.close()
        errors_out.close()
    done_path.write_text(json.dumps({"shard_index": shard_index, "shard_count": shard_count}))
    merged = shard_count == 1 or merge_parts(out, shard_count)
    elapsed_s = time.perf_counter() - start
    return {
        "out": str(out),
        "shard_index": shard_index,
        "shard_count": shard_count,
        "num_listed": len(uids),
        "num_skipped": len(uids) - len(todo),
        "num_scored": num_scored,
        "num_errors": num_errors,
        "audio_s": audio_s,
        "elapsed_s": elapsed_s,
        "hours_per_hour": audio_s / elapsed_s if elapsed_s > 0 else 0.0,
        "shapes": sorted(scorer.shapes),
        "merged": merged,
    }


# --- command line ---------------------------------------------------------------------------------


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("speech_scp", None, "uid [fs] path list of the corpus.")
    flags.DEFINE_string("out", None, "scores.tsv to write (errors.tsv goes beside it).")
    flags.DEFINE_integer("batch_size", 8, "Utterances per jitted call.")
    flags.DEFINE_integer("num_workers", 2, "Threads decoding audio.")
    flags.DEFINE_integer("shard_index", None, "This process's shard (default jax.process_index).")
    flags.DEFINE_integer("shard_count", None, "Number of shards (default jax.process_count).")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    flags.DEFINE_bool(
        "distill_mos",
        True,
        "Score Distill-MOS (--nodistill_mos: NaN there, much faster on long files).",
    )
    flags.mark_flags_as_required(["speech_scp", "out"])


def main(argv) -> None:
    from absl import app, flags

    from urgent_jax import prepare_runtime

    f = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    prepare_runtime()
    summary = score_corpus(
        f.speech_scp,
        f.out,
        batch_size=f.batch_size,
        num_workers=f.num_workers,
        shard_index=f.shard_index,
        shard_count=f.shard_count,
        use_progress_bar=f.progress,
        distill_mos=f.distill_mos,
    )
    print(
        f"scored {summary['num_scored']} utterances ({summary['audio_s'] / 3600:.3f} h), "
        f"skipped {summary['num_skipped']} already done, {summary['num_errors']} errors, "
        f"{summary['elapsed_s']:.1f} s ({summary['hours_per_hour']:.1f} h audio / h), "
        f"{len(summary['shapes'])} compiled shapes -> {summary['out']}"
    )


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
