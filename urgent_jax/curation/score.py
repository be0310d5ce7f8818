"""Batched quality scoring of a speech corpus into scores.tsv (data curation, REFERENCE.md §5).

    python -m urgent_jax.curation.score --speech_scp speech_sources.scp --out scores.tsv \
        [--batch_size 8] [--num_workers 2] [--shard_index P --shard_count N] [--noprogress] \
        [--nodistill_mos] [--coordinator_address H:P --num_processes N --process_id P]

`speech_scp` holds `uid fs path` (the Track 1 source-list format, §1.1) or `uid path` lines; a
path may be a packed utterance `packed:<DIR>#<uid>` (urgent_jax.data.pack).
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
`num_workers` threads ahead of the jitted scoring in the main process. The scoring is
data-parallel over every local device (`Scorer`): the batch axis is sharded over a 1-D mesh
(rows padded to a multiple of the device count, the extra rows dropped); the scores are the same
as on one device.

Multi-host: each process scores the uids of its shard, `shard_of(uid, shard_count) ==
shard_index` (crc32 of the uid: adding uids or changing the shard count moves no scored uid), by
default shard jax.process_index() of jax.process_count(). The command initialises
jax.distributed as the trainer does (`train.loop.maybe_initialize_distributed`): from
--coordinator_address / --num_processes / --process_id, else with no arguments (JAX's cluster
detection: SLURM, Open MPI, ... give the process count and id) when JAX_COORDINATOR_ADDRESS is set
or on a multi-host TPU slice (TPU_WORKER_HOSTNAMES); otherwise it is one process, shard 0 of 1. A process writes `<out stem>.<p>.tsv` / `errors.<p>.tsv`, then
`<out stem>.<p>.done` (holding a fingerprint of the sorted uid list and the shard count: a marker
of another list or count does not count); whichever process finds every part done merges them into
`out` and errors.tsv (one row per uid), under an exclusive lock (`<out stem>.lock`) through
temporary files of its own. One process writes `out` directly.

Resume: uids already in any scores or errors table beside `out` (out, errors.tsv, or the part
files of any shard count) are skipped; results are appended after every batch, so an interrupted
run loses at most one batch. A row cut by a crash (no final newline, or fields that do not parse)
is dropped and its uid rescored.

Bad files (missing, unreadable, rate different from the list, empty, shorter than 0.1 s,
non-finite, silent) go to errors.tsv (uid, path, reason) and never stop the run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import glob
import hashlib
import itertools
import json
import logging
import math
import os
import re
import time
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from urgent_jax.audio.bandwidth import estimate_bandwidth, target_sample_rate
from urgent_jax.audio.io import AudioFileError, audio_exists, audio_info
from urgent_jax.audio.packed import is_packed
from urgent_jax.audio.quality import quality_features
from urgent_jax.data.manifest import write_text_atomic
from urgent_jax.data.sources import BadFileError, read_checked, read_speech_list
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
    """uid -> (fs or None, path) of the list to score (`data.sources.read_speech_list`: relative
    paths, and the DIR of relative packed paths `packed:<DIR>#<uid>`, from the current directory
    if they exist there, else from the list's directory); an empty list is an error."""
    out = read_speech_list(path)
    if not out:
        raise ValueError(f"{path}: empty speech list (no 'uid [fs] path' lines)")
    return out


def read_table(path: str | os.PathLike, *, strict: bool = False) -> list[dict[str, str]]:
    """Rows of a tab-separated file with a header (empty if the file does not exist). A last line
    without its newline (cut by a crash mid-write) and lines with another number of fields than
    the header are dropped, so their uids are rescored; strict=True raises ValueError naming
    `path:line` for them instead. Without dropped lines, row i is on line i + 2."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")  # [-1]: "" after the last newline, else a cut line
    if strict and lines[-1]:
        raise ValueError(f"{path}:{len(lines)}: last line cut (no newline): an interrupted "
                         "scoring run? Run score again to finish the table")  # fmt: skip
    lines = lines[:-1]
    if not lines:
        return []
    header = lines[0].split("\t")
    rows = []
    for line_number, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) == len(header):
            rows.append(dict(zip(header, fields)))
        elif strict:
            raise ValueError(f"{path}:{line_number}: {len(fields)} fields, the header has "
                             f"{len(header)}")  # fmt: skip
    return rows


def _parse_score_row(row: dict[str, str]) -> dict | None:
    """A scores.tsv row with numbers as float (fs, target_fs as int); None if a field does not
    parse (or uid / path is empty): such a row is ignored and its uid rescored."""
    parsed = {}
    try:
        for key, value in row.items():
            if key in ("uid", "path"):
                if not value:
                    return None
                parsed[key] = value
            elif key in ("fs", "target_fs"):
                parsed[key] = int(value)
            else:
                parsed[key] = float(value)
    except ValueError:
        return None
    return parsed if "uid" in parsed else None


def _score_rows(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """uid -> raw row of the rows of a scores file that parse (a later row wins)."""
    return {r["uid"]: r for r in read_table(path) if _parse_score_row(r) is not None}


def _error_rows(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    return {r["uid"]: r for r in read_table(path) if r.get("uid") and r.get("reason")}


def read_scores(path: str | os.PathLike, *, strict: bool = False) -> dict[str, dict]:
    """scores.tsv -> uid -> row with numbers as float (fs, target_fs as int).

    strict=False (resuming a scoring run): rows that do not parse (a crash mid-write) are skipped
    with a warning. strict=True (a finished table, as `filter` reads it): such a row, a last line
    cut without its newline, or a header without the uid / fs / path columns raises ValueError
    naming `path:line`, so that no utterance leaves the curated list unreported.
    """
    rows = read_table(path, strict=strict)
    if strict and rows:
        missing = [c for c in ("uid", "fs", "path") if c not in rows[0]]
        if missing:
            raise ValueError(f"{path}:1: header has no column(s) {missing} (a scores.tsv of "
                             f"urgent_jax.curation.score?)")  # fmt: skip
    out = {}
    for line_number, row in enumerate(rows, 2):
        parsed = _parse_score_row(row)
        if parsed is None:
            if strict:
                raise ValueError(f"{path}:{line_number}: a field does not parse (fs / target_fs "
                                 f"integers, scores numbers or nan, uid and path non-empty): "
                                 f"{row}")  # fmt: skip
            log.warning("%s: skipping a row that does not parse: %s", path, row)
            continue
        out[parsed["uid"]] = parsed
    return out


class _TableWriter:
    """Appends rows to a tab-separated file, writing the header if the file is new or empty."""

    def __init__(self, path: Path, columns: Sequence[str]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = tuple(columns)
        if path.exists():
            _truncate_partial_line(path)  # a crash can leave a cut last line: drop it
        is_new = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", encoding="utf-8", newline="\n")
        if is_new:
            self.file.write("\t".join(self.columns) + "\n")

    def write(self, row: dict) -> None:
        self.file.write("\t".join(_format(row[c]) for c in self.columns) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _truncate_partial_line(path: Path, block: int = 1 << 16) -> None:
    """Cut a file after its last newline (nothing if it ends with one)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end != size:
            f.truncate(end)


def _format(value) -> str:
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return " ".join(str(value).split())  # no tabs or line breaks inside a field


def shard_of(uid: str, shard_count: int) -> int:
    """The shard that scores `uid`: crc32 of its UTF-8 bytes mod shard_count. Stable: it depends
    on the uid alone, so adding uids to the list moves no other uid to another shard."""
    return zlib.crc32(uid.encode("utf-8")) % shard_count


def list_fingerprint(uids, shard_count: int) -> str:
    """sha256 of shard_count and the sorted uid list: what a .done marker is valid for."""
    digest = hashlib.sha256(f"{shard_count}\n".encode())
    for uid in sorted(uids):
        digest.update(uid.encode("utf-8") + b"\n")
    return digest.hexdigest()


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


def _all_tables(out: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(scores files, errors files) of every earlier run into `out`: out and errors.tsv, and the
    part files of every shard index (of any shard count)."""
    out = Path(out)

    def parts(stem: str) -> list[Path]:
        pattern = re.compile(rf"{re.escape(stem)}\.(\d+)\.tsv")
        found = [p for p in out.parent.glob(f"{glob.escape(stem)}.*.tsv")
                 if pattern.fullmatch(p.name)]  # fmt: skip
        return sorted(found, key=lambda p: int(pattern.fullmatch(p.name).group(1)))

    return [out, *parts(out.stem)], [out.parent / "errors.tsv", *parts("errors")]


def finished_uids(out: str | os.PathLike) -> set[str]:
    """uids already scored or reported in any scores / errors table of `out` (any shard)."""
    score_paths, error_paths = _all_tables(out)
    done = set()
    for path in score_paths:
        done |= set(_score_rows(path))
    for path in error_paths:
        done |= set(_error_rows(path))
    return done


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _merge_lock(out: Path):
    """An exclusive lock on `<out stem>.lock` (fcntl.flock, blocking; released when the process
    dies, so no stale lock; NFS clients emulate it with POSIX locks)."""
    import fcntl

    fd = os.open(out.parent / f"{out.stem}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def merge_parts(out: str | os.PathLike, shard_count: int, fingerprint: str | None = None) -> bool:
    """Merge every scores / errors table of `out` (all part files, of any shard count, and out
    itself) into `out` / errors.tsv, one row per uid sorted by uid, if every shard of
    `shard_count` is done (with `fingerprint`: only .done markers written for that uid list and
    shard count count); returns whether `out` holds every shard.

    Safe when several processes finish together: one merges at a time (a lock), through
    temporary files of its own, and a process that finds the same done markers already merged
    does not merge again."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _merge_lock(out):
        runs = []
        for p in range(shard_count):
            marker = _read_marker(part_paths(out, p, shard_count)[2])
            if marker is None or marker.get("shard_count") != shard_count:
                return False
            if fingerprint is not None and marker.get("fingerprint") != fingerprint:
                return False  # written for another list or shard count: that shard must rerun
            runs.append(marker.get("run"))
        merged_marker = out.parent / f"{out.stem}.merged"
        if out.exists() and _read_marker(merged_marker) == {"runs": runs}:
            return True  # another process merged these very shards
        score_paths, error_paths = _all_tables(out)
        scores, errors = {}, {}
        for path in score_paths:
            scores.update(_score_rows(path))
        for path in error_paths:
            errors.update(_error_rows(path))
        errors = {uid: row for uid, row in errors.items() if uid not in scores}
        for path, rows, columns in (
            (out, scores, COLUMNS),
            (out.parent / "errors.tsv", errors, ERROR_COLUMNS),
        ):
            lines = ["\t".join(columns)]
            lines += ["\t".join(rows[uid].get(c, "nan") for c in columns) for uid in sorted(rows)]
            write_text_atomic(path, "".join(line + "\n" for line in lines))
        write_text_atomic(merged_marker, json.dumps({"runs": runs}))
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
    if not audio_exists(path):  # a file, or a packed utterance (packed:<DIR>#<uid>)
        return uid, "missing: " + ("no such pack or uid" if is_packed(path) else "no such file")
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
    """The jitted per-batch scoring (metrics built once), data-parallel over `devices` (default:
    every local device): the batch axis is sharded over a 1-D mesh, each device scoring its rows
    (`jax.shard_map`); `shapes` records the compiled shapes."""

    def __init__(self, distill_mos: bool = True, devices: Sequence | None = None):
        """distill_mos=False: the distill_mos column is NaN (the model is not run or loaded)."""
        from urgent_jax.metrics import distillmos, dnsmos

        self.devices = list(jax.local_devices() if devices is None else devices)
        self.mesh = Mesh(np.array(self.devices), ("batch",))
        replicated = NamedSharding(self.mesh, P())
        self._batch_sharding = NamedSharding(self.mesh, P("batch"))
        self._dnsmos = dnsmos
        self._dnsmos_params = jax.device_put(dnsmos.load_dnsmos_params(), replicated)
        self.distill_mos = distill_mos
        self._distill_params = None
        if distill_mos:  # an argument, not a constant: no constant folding
            self._distill_params = jax.device_put(distillmos.load_params(), replicated)
        self._compiled: dict[tuple, object] = {}
        self.shapes: set[tuple] = set()

    def _scoring_fn(self, sample_rate: int, segs: int, front_frames, distinct_segs):
        """jit(shard_map(score one block of rows)) for these static settings (built once)."""
        key = (sample_rate, segs, front_frames, distinct_segs)
        if key not in self._compiled:
            from urgent_jax.metrics import distillmos

            dnsmos = self._dnsmos

            def block(dnsmos_params, distill_params, audio, lengths):  # this device's rows
                raw = dnsmos.dnsmos_raw(
                    dnsmos_params, audio, lengths, sample_rate, segs, 1, front_frames,
                    distinct_segs,
                )  # fmt: skip
                out = {f"dnsmos_{k}": v for k, v in dnsmos.segment_mean(*raw).items()}
                if distill_params is not None:
                    out["distill_mos"] = distillmos.distill_mos(
                        audio, lengths, sample_rate, params=distill_params
                    )
                out["bandwidth_hz"] = estimate_bandwidth(audio, lengths, sample_rate)
                out.update(quality_features(audio, lengths, sample_rate))
                return out

            self._compiled[key] = jax.jit(
                jax.shard_map(
                    block,
                    mesh=self.mesh,
                    in_specs=(P(), P(), P("batch"), P("batch")),
                    out_specs=P("batch"),
                )
            )
        return self._compiled[key]

    def score_on_devices(
        self, audio: np.ndarray, lengths: np.ndarray, sample_rate: int
    ) -> dict[str, jax.Array]:
        """audio [B, T] (every row valid, lengths >= 1) -> {column: jax.Array [B']} sharded over
        the devices along the batch axis, B' = B rounded up to a multiple of the device count:
        the extra rows repeat row 0 and are to be dropped (no target_fs column)."""
        audio, lengths = np.asarray(audio, np.float32), np.asarray(lengths, np.int32)
        num_rows = len(lengths)
        padded_rows = -(-num_rows // len(self.devices)) * len(self.devices)
        if padded_rows != num_rows:
            index = np.concatenate([np.arange(num_rows), np.zeros(padded_rows - num_rows, int)])
            audio, lengths = audio[index], lengths[index]
        segs = self._dnsmos.required_segments(lengths, sample_rate)
        front_frames, distinct_segs = self._dnsmos.shortcuts(
            lengths, audio.shape[1], sample_rate, segs
        )
        self.shapes.add((sample_rate,) + audio.shape + (segs,))
        fn = self._scoring_fn(sample_rate, segs, front_frames, distinct_segs)
        return fn(
            self._dnsmos_params,
            self._distill_params,
            jax.device_put(audio, self._batch_sharding),
            jax.device_put(lengths, self._batch_sharding),
        )

    def __call__(self, audio: np.ndarray, lengths: np.ndarray, sample_rate: int) -> dict:
        """audio [B, T] (every row valid, lengths >= 1) -> {column: np.ndarray [B]}."""
        num_rows = len(lengths)
        out = self.score_on_devices(audio, lengths, sample_rate)
        out = {k: np.asarray(v, np.float64)[:num_rows] for k, v in out.items()}
        if not self.distill_mos:
            out["distill_mos"] = np.full(num_rows, np.nan)
        out["target_fs"] = target_sample_rate(out["bandwidth_hz"])
        return out


def _default_shard() -> tuple[int, int]:
    """(jax.process_index(), jax.process_count()): (0, 1) unless jax.distributed is initialised
    (the command does that for multi-process runs, see `main`)."""
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
    uids = [u for u in sorted(listed) if shard_of(u, shard_count) == shard_index]
    fingerprint = list_fingerprint(listed, shard_count)
    score_path, error_path, done_path = part_paths(out, shard_index, shard_count)
    finished = finished_uids(out)  # in any shard's tables: a new shard count rescores nothing
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
    if scorer is None and batches:  # nothing to score: no weights loaded
        scorer = Scorer(distill_mos)
    if scorer is not None:
        distill_mos = getattr(scorer, "distill_mos", True)
    skipped = () if distill_mos else ("distill_mos",)
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
    marker = {
        "shard_index": shard_index,
        "shard_count": shard_count,
        "fingerprint": fingerprint,  # valid for this uid list and shard count only
        "run": uuid.uuid4().hex,  # tells a merge of these shards from an earlier one
    }
    write_text_atomic(done_path, json.dumps(marker))
    if shard_count > 1 or len(_all_tables(out)[0]) > 1:  # parts (maybe of an earlier run) exist
        merged = merge_parts(out, shard_count, fingerprint)
    else:
        merged = True
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
        "shapes": sorted(scorer.shapes) if scorer is not None else [],
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
    flags.DEFINE_string(
        "coordinator_address",
        None,
        "host:port of process 0 for a multi-process run without cluster auto-detection "
        "(with --num_processes and --process_id).",
    )
    flags.DEFINE_integer("num_processes", None, "Processes of a multi-process run.")
    flags.DEFINE_integer("process_id", None, "This process's id in a multi-process run.")
    flags.DEFINE_integer(
        "distributed_timeout_s", 300, "Wait this long for every process at start-up, then abort."
    )
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
    # Before any computation: with it jax.process_index() / process_count() (the default shard)
    # are this process's place in the job, as in the trainer.
    from urgent_jax.train.loop import maybe_initialize_distributed

    maybe_initialize_distributed(
        f.coordinator_address, f.num_processes, f.process_id, f.distributed_timeout_s
    )
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
