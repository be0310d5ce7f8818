"""Grain random-access sources: pre-simulated pairs and dynamic-mixing source triples.

- `PresimulatedSource(set_dir)`: a simulated set in the official layout (REFERENCE.md §1.2: wav.scp
  noisy, spk1.scp target, utt2fs, optional speech_length.scp); one item = one (noisy, target) pair.
- `DynamicMixingSource(sources_dir)`: Track 1 source lists (§1.1); one item = one speech utterance
  plus a noise (wind with probability `p_wind`) and, with probability `p_reverb`, an RIR, selected
  as in dynamic mixing (§2.11: uniform, with replacement, same rate or higher, never lower; §2.2).

Both are picklable (Grain spawns worker processes) and do only host work: soundfile reads of the
needed segment and `resample_numpy` (no JAX inside workers); a manifest path may also name a packed
utterance, `packed:<DIR>#<uid>` (see `urgent_jax.audio.packed`). Bad files (`REASONS`) are handled
by a `BadFileCounter`: under policy "skip" they are replaced deterministically and counted with
path and reason; under "raise" they raise `BadFileError` naming the file. Every loaded item carries
its own skip counts (`skipped`, int32 [len(REASONS)]) so that counts survive worker processes.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from urgent_jax.audio.io import AudioFileError, audio_exists, audio_info, read_audio
from urgent_jax.audio.packed import PackedAudioError, is_packed, resolve_packed, split_packed
from urgent_jax.audio.resample import resample_numpy
from urgent_jax.data.manifest import (
    ManifestError,
    SourceEntry,
    read_int_kv,
    read_kv,
    read_source_dir,
    read_utt2fs,
)

logger = logging.getLogger(__name__)

SkipPolicy = Literal["skip", "raise"]
# Reason codes; the order is the layout of every `skipped` count array.
REASONS: tuple[str, ...] = (
    "missing",
    "unreadable",
    "empty",
    "silent",
    "non_finite",
    "too_short",
    "wrong_rate",
    "duration_mismatch",  # SQA: audio longer than its data.jsonl duration (sqa.data.SQASource)
)
NUM_REASONS = len(REASONS)
SILENT_PEAK = 1e-7  # a segment whose peak |x| is at most this is silent (16-bit LSB is 3e-5)
WIND_PREFIX = "wind_noise"  # uid prefix by which the simulator recognises wind noise (§1.1)


class BadFileError(RuntimeError):
    """An unusable source file; `path` and `reason` (one of REASONS) are also attributes."""

    def __init__(self, path: str, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown bad-file reason {reason!r} (known: {REASONS})")
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):  # keep the attributes through pickling (worker -> main process)
        return (BadFileError, (self.path, self.reason, self.detail))


class BadFileCounter:
    """Counts skipped files per reason, remembers (path, reason) and rate-limits warnings.

    policy "raise" turns `report` into a re-raise. At most one warning per reason is logged every
    `warning_interval_s` seconds; the others are counted and mentioned with the next warning. At
    most `max_paths` distinct paths are remembered. Thread-safe; picklable (the lock is rebuilt).
    """

    def __init__(
        self,
        policy: SkipPolicy = "skip",
        *,
        warning_interval_s: float = 60.0,
        max_paths: int = 1000,
        log_warnings: bool = True,
    ):
        if policy not in ("skip", "raise"):
            raise ValueError(f"policy must be 'skip' or 'raise', got {policy!r}")
        self.policy = policy
        self.warning_interval_s = warning_interval_s
        self.max_paths = max_paths
        self.log_warnings = log_warnings
        self.counts = np.zeros(NUM_REASONS, np.int64)  # skip events per reason
        self.paths: dict[str, str] = {}  # path -> reason (first seen)
        self._last_warning = np.full(NUM_REASONS, -np.inf)
        self._suppressed = np.zeros(NUM_REASONS, np.int64)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def report(self, error: BadFileError) -> None:
        """Re-raise under policy "raise"; otherwise count, remember the path and maybe warn."""
        if self.policy == "raise":
            raise error
        r = REASONS.index(error.reason)
        with self._lock:
            self.counts[r] += 1
            if len(self.paths) < self.max_paths:
                self.paths.setdefault(error.path, error.reason)
            self._maybe_warn(r, f"skipped {error}")

    def add_counts(self, counts: np.ndarray) -> None:
        """Add skip counts [NUM_REASONS] that were counted elsewhere (a batch's `skipped` field)."""
        counts = np.asarray(counts, np.int64).reshape(NUM_REASONS)
        with self._lock:
            self.counts += counts
            for r in np.flatnonzero(counts):
                self._maybe_warn(r, f"skipped {counts[r]} source file(s): {REASONS[r]}", counts[r])

    def _maybe_warn(self, r: int, message: str, num: int = 1) -> None:
        now = time.monotonic()
        if not self.log_warnings:
            return
        if now - self._last_warning[r] < self.warning_interval_s:
            self._suppressed[r] += num
            return
        if self._suppressed[r]:
            message += f" (+{self._suppressed[r]} more '{REASONS[r]}' since the last warning)"
        self._last_warning[r], self._suppressed[r] = now, 0
        logger.warning("%s [total %s: %d]", message, REASONS[r], self.counts[r])

    def as_dict(self) -> dict[str, int]:
        """reason -> number of skip events (all reasons, zeros included)."""
        return {reason: int(n) for reason, n in zip(REASONS, self.counts)}

    def summary(self, max_listed: int = 20) -> str:
        """Multi-line text: total, counts per reason, then up to `max_listed` paths with reasons."""
        total = int(self.counts.sum())
        if total == 0:
            return "bad source files: none skipped"
        per_reason = ", ".join(f"{k}: {v}" for k, v in self.as_dict().items() if v)
        lines = [f"bad source files: {total} skipped ({per_reason})"]
        for path, reason in list(self.paths.items())[:max_listed]:
            lines.append(f"  {reason}: {path}")
        if len(self.paths) > max_listed:
            lines.append(f"  ... and {len(self.paths) - max_listed} more paths")
        return "\n".join(lines)


# --- checked reads --------------------------------------------------------------------------------


def resolve_path(path: str, base_dir: Path) -> str:
    """Absolute paths as written; relative ones from the current directory if they exist there,
    else from the manifest's directory (official lists are written relative to the recipe root).
    For a packed path `packed:<DIR>#<uid>` the same rule applies to DIR."""
    if is_packed(path):
        try:
            directory, _ = split_packed(path)
        except PackedAudioError:
            return path  # malformed: reported as missing when read
        if os.path.isabs(directory) or os.path.isdir(directory):
            return path
        return resolve_packed(path, base_dir)
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return str(base_dir / path)


def read_speech_list(path: str | os.PathLike) -> dict[str, tuple[int | None, str]]:
    """uid -> (fs or None, path) from a list of `uid fs path` or `uid path` lines, paths resolved
    by `resolve_path` against the list's directory. FileNotFoundError for a missing list,
    ValueError naming the list and line for a malformed line or a repeated uid. An empty list is
    returned empty (callers decide whether that is an error)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: speech list not found")
    base = Path(path).parent
    out, first_line = {}, {}
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
                raise ValueError(
                    f"{path}:{line_no}: duplicate uid {uid} (first on line {first_line[uid]})"
                )
            out[uid], first_line[uid] = (fs, resolve_path(file_path, base)), line_no
    return out


def _check_exists(path: str) -> None:
    """BadFileError "missing" unless `path` is a file or a packed utterance of an existing pack."""
    if not audio_exists(path):
        detail = "no such pack directory or uid" if is_packed(path) else "no such file"
        raise BadFileError(path, "missing", detail)


def read_checked(
    path: str,
    expected_fs: int,
    *,
    start: int = 0,
    num_samples: int | None = None,
    min_num_samples: int = 1,
    allow_silent: bool = False,
) -> np.ndarray:
    """Channel 0 of `path` as float32 [T] at its own rate (start/num_samples in its samples),
    raising BadFileError (missing, unreadable, wrong_rate, empty, too_short, non_finite, silent;
    silence only unless `allow_silent`)."""
    _check_exists(path)
    try:
        x, sr = read_audio(path, first_channel=True, start=start, num_samples=num_samples)
    except AudioFileError as e:
        raise BadFileError(path, "unreadable", str(e).removeprefix(f"{path}: ")) from None
    if sr != expected_fs:
        raise BadFileError(path, "wrong_rate", f"file rate {sr} Hz, list says {expected_fs} Hz")
    x = x[0]
    if x.size == 0:
        raise BadFileError(path, "empty", f"no samples from offset {start}")
    if x.size < min_num_samples:
        raise BadFileError(path, "too_short", f"{x.size} < {min_num_samples} samples")
    if not np.all(np.isfinite(x)):
        raise BadFileError(path, "non_finite", "NaN or inf samples")
    if not allow_silent and float(np.max(np.abs(x))) <= SILENT_PEAK:
        raise BadFileError(path, "silent", f"peak <= {SILENT_PEAK:g}")
    return x


def _header_length(path: str, expected_fs: int) -> int:
    """Samples in `path` from its header; BadFileError if missing, unreadable or at another rate."""
    _check_exists(path)
    try:
        sr, frames, _ = audio_info(path)
    except AudioFileError as e:
        raise BadFileError(path, "unreadable", str(e).removeprefix(f"{path}: ")) from None
    if sr != expected_fs:
        raise BadFileError(path, "wrong_rate", f"file rate {sr} Hz, list says {expected_fs} Hz")
    return frames


def _random_window(
    length: int, max_num_samples: int | None, rng: np.random.Generator | None
) -> tuple[int, int | None]:
    """(start, num_samples or None = to the end) of a random crop of at most max_num_samples."""
    if max_num_samples is None or length <= max_num_samples:
        return 0, None
    start = 0 if rng is None else int(rng.integers(0, length - max_num_samples + 1))
    return start, int(max_num_samples)


def _min_length(min_duration_s: float, fs: int, max_num_samples: int | None) -> int:
    """Fewest samples a read may return: min_duration_s, but never more than the crop asked for."""
    min_len = max(1, math.ceil(min_duration_s * fs))
    return min_len if max_num_samples is None else max(1, min(min_len, max_num_samples))


class _GroupedItems:
    """Items grouped by sampling rate; the deterministic replacement order for bad items."""

    def __init__(self, sample_rates: np.ndarray):
        self.sample_rates = np.asarray(sample_rates, np.int32)
        rates = np.unique(self.sample_rates)
        self.groups = {int(fs): np.flatnonzero(self.sample_rates == fs) for fs in rates}
        self.position = np.zeros(len(sample_rates), np.int64)
        for members in self.groups.values():
            self.position[members] = np.arange(len(members))

    def candidate(self, index: int, attempt: int) -> int:
        """attempt 0: the item itself; then the next items of the same rate, cyclically."""
        members = self.groups[int(self.sample_rates[index])]
        return int(members[(self.position[index] + attempt) % len(members)])


def _load_with_retries(load_one, grouped: _GroupedItems, index: int, max_retries: int, counter):
    """load_one(i) for i = index, then its replacements; -> (item, i, skipped [NUM_REASONS])."""
    skipped = np.zeros(NUM_REASONS, np.int32)
    for attempt in range(max_retries + 1):
        i = grouped.candidate(index, attempt)
        try:
            return load_one(i), i, skipped
        except BadFileError as e:
            counter.report(e)
            skipped[REASONS.index(e.reason)] += 1
    raise RuntimeError(f"item {index}: no usable replacement after {max_retries + 1} bad files")


# --- pre-simulated sets ---------------------------------------------------------------------------


class PresimulatedSource:
    """A pre-simulated set: item i = dict of numpy `noisy`, `target` float32 [T], `fs`, `length`,
    `index` int32 and `skipped` int32 [NUM_REASONS] (uids stay host-side: `uid(index)`).

    The real rate of each file must equal its utt2fs rate ("wrong_rate" otherwise). policy "raise"
    (default) raises BadFileError on the first bad file; "skip" replaces a bad pair by the next
    pair of the same rate (at most `max_retries` times). `load(i, rng, max_num_samples)` reads a
    random window (same offset for noisy and target) of items longer than max_num_samples.
    """

    def __init__(
        self,
        set_dir: str | os.PathLike,
        *,
        policy: SkipPolicy = "raise",
        min_duration_s: float = 0.1,
        max_retries: int = 8,
        counter: BadFileCounter | None = None,
    ):
        set_dir = Path(set_dir)
        self.set_dir = str(set_dir)
        noisy = read_kv(set_dir / "wav.scp")
        target = read_kv(set_dir / "spk1.scp")
        utt2fs = read_utt2fs(set_dir / "utt2fs")
        for name, table in (("spk1.scp", target), ("utt2fs", utt2fs)):
            if set(table) != set(noisy):
                diff = sorted(set(noisy) ^ set(table))[:5]
                reason = f"wav.scp and {name} have different uids, e.g. {diff}"
                raise ManifestError(f"{set_dir}: {reason}")
        self.uids = list(noisy)
        self.noisy_paths = [resolve_path(noisy[u], set_dir) for u in self.uids]
        self.target_paths = [resolve_path(target[u], set_dir) for u in self.uids]
        self._fs = np.array([utt2fs[u] for u in self.uids], np.int32)
        self._grouped = _GroupedItems(self._fs)
        self._lengths: np.ndarray | None = None
        length_file = set_dir / "speech_length.scp"
        if length_file.is_file():
            table = read_int_kv(length_file)
            missing = [u for u in self.uids if u not in table]
            if missing:
                reason = f"no length for {len(missing)} uids, e.g. {missing[0]}"
                raise ManifestError(f"{length_file}: {reason}")
            self._lengths = np.array([table[u] for u in self.uids], np.int64)
        self.min_duration_s = min_duration_s
        self.max_retries = max_retries
        self.counter = counter if counter is not None else BadFileCounter(policy)

    def __len__(self) -> int:
        return len(self.uids)

    def uid(self, index: int) -> str:
        return self.uids[index]

    def sample_rates(self) -> np.ndarray:
        """[N] int32 utt2fs rates, Hz."""
        return self._fs

    def lengths(self) -> np.ndarray:
        """[N] int64 samples: speech_length.scp, else the noisy file headers (0 where unreadable,
        under policy "skip"; the load then reports the file)."""
        if self._lengths is None:
            lengths = np.zeros(len(self), np.int64)
            for i, (path, fs) in enumerate(zip(self.noisy_paths, self._fs)):
                try:
                    lengths[i] = _header_length(path, int(fs))
                except BadFileError:
                    if self.counter.policy == "raise":
                        raise
            self._lengths = lengths
        return self._lengths

    def __getitem__(self, index: int) -> dict:
        return self.load(int(index))

    def load(
        self,
        index: int,
        rng: np.random.Generator | None = None,
        max_num_samples: int | None = None,
    ) -> dict:
        """Item `index` (or its same-rate replacement under "skip"), cropped to max_num_samples
        at a random offset drawn from rng (offset 0 without rng); the whole pair when None."""
        lengths = self.lengths()

        def load_one(i: int) -> dict:
            fs = int(self._fs[i])
            start, num = _random_window(int(lengths[i]), max_num_samples, rng)
            min_len = _min_length(self.min_duration_s, fs, max_num_samples)
            kw = dict(start=start, num_samples=num, min_num_samples=min_len)
            noisy = read_checked(self.noisy_paths[i], fs, **kw)
            target = read_checked(self.target_paths[i], fs, **kw)
            n = min(noisy.size, target.size)
            return {"noisy": noisy[:n], "target": target[:n], "fs": np.int32(fs),
                    "length": np.int32(n), "index": np.int32(i)}  # fmt: skip

        item, _, skipped = _load_with_retries(
            load_one, self._grouped, index, self.max_retries, self.counter
        )
        item["skipped"] = skipped
        return item


# --- dynamic mixing -------------------------------------------------------------------------------


class DynamicMixingSource:
    """Speech utterances of a Track 1 source directory with a noise and maybe an RIR each.

    Index space: the speech list grouped by its fs column (ascending rates, list order inside).
    `load(index, rng, max_num_samples)` returns a dict of numpy:
      speech   float32 [T]   channel 0 at its list rate, a random window of <= max_num_samples
      noise    float32 [Tn]  Tn <= T: a random segment at the speech rate (read at the file rate,
                             only the needed part, then resampled down with `resample_numpy`)
      rir      float32 [Tr]  the RIR from its start, truncated after max_rir_duration_s (at most
                             ceil(max_rir_duration_s * fs) samples); [0] without reverberation
      is_wind  bool; fs, noise_fs, rir_fs int32 (Hz; 0 = none); index, noise_index, rir_index
      int32 (-1 = none); skipped int32 [NUM_REASONS]; speech_uid, noise_uid, rir_uid str.
    Noise: with probability p_wind a wind noise (uid prefix `wind_noise`), else an ordinary one,
    uniform with replacement among files at exactly the speech rate, else at a random higher rate
    (never lower; wind falls back to ordinary noise when no wind file qualifies). RIR: with
    probability p_reverb, same rate rule. `sample_rates` keeps only speech at those rates (all when
    None), e.g. to train a quick model at a few rates. Unlike the official DM (§6.7) RIRs are never cropped at
    random. policy "skip" (default) replaces a bad speech item by the next item of its rate and a
    bad noise/RIR by another draw, at most `max_retries` times each.
    """

    def __init__(
        self,
        sources_dir: str | os.PathLike,
        *,
        p_wind: float = 0.05,
        p_reverb: float = 0.5,
        max_num_samples: int | None = 96000,
        max_rir_duration_s: float = 2.0,
        min_duration_s: float = 0.1,
        policy: SkipPolicy = "skip",
        max_retries: int = 8,
        counter: BadFileCounter | None = None,
        sample_rates: Sequence[int] | None = None,
    ):
        sources_dir = Path(sources_dir)
        tables = read_source_dir(sources_dir)
        order = sorted(range(len(tables.speech)), key=lambda i: tables.speech[i].fs)  # stable
        if sample_rates:
            wanted = {int(r) for r in sample_rates}
            order = [i for i in order if tables.speech[i].fs in wanted]
            if not order:
                found = sorted({e.fs for e in tables.speech})
                raise ValueError(f"{sources_dir}: no speech at sample_rates {sorted(wanted)}; "
                                 f"the speech list has {found}")
        self.speech = [self._resolved(tables.speech[i], sources_dir) for i in order]
        noises = [self._resolved(e, sources_dir) for e in tables.noise + tables.wind_noise]
        self.noise: list[SourceEntry] = noises  # ordinary and wind noise, one table
        self.rir: list[SourceEntry] = [self._resolved(e, sources_dir) for e in tables.rir]
        self._table_lengths = tables.lengths  # uid -> samples at the file's rate
        self._fs = np.array([e.fs for e in self.speech], np.int32)
        self._grouped = _GroupedItems(self._fs)
        is_wind = np.array([e.uid.startswith(WIND_PREFIX) for e in noises], bool)
        self._noise_pool = self._pool(noises, ~is_wind)
        self._wind_pool = self._pool(noises, is_wind)
        self._rir_pool = self._pool(self.rir, np.ones(len(self.rir), bool))
        for fs in np.unique(self._fs):
            if not any(rate >= fs for rate in self._noise_pool):
                raise ValueError(f"{sources_dir}: no ordinary noise at {fs} Hz or above")
        self.p_wind, self.p_reverb = float(p_wind), float(p_reverb)
        self.max_num_samples = max_num_samples
        self.max_rir_duration_s = max_rir_duration_s
        self.min_duration_s = min_duration_s
        self.max_retries = max_retries
        self.counter = counter if counter is not None else BadFileCounter(policy)
        self._lengths: np.ndarray | None = None

    @staticmethod
    def _resolved(entry: SourceEntry, base_dir: Path) -> SourceEntry:
        return SourceEntry(entry.uid, entry.fs, resolve_path(entry.path, base_dir))

    @staticmethod
    def _pool(entries: Sequence[SourceEntry], mask: np.ndarray) -> dict[int, np.ndarray]:
        """rate -> indices into entries (where mask), for the rate rule of §2.2."""
        rates = np.array([e.fs for e in entries], np.int64)
        return {int(fs): np.flatnonzero(mask & (rates == fs)) for fs in np.unique(rates[mask])}

    def __len__(self) -> int:
        return len(self.speech)

    def uid(self, index: int) -> str:
        return self.speech[index].uid

    def sample_rates(self) -> np.ndarray:
        """[N] int32 speech list rates, Hz."""
        return self._fs

    def lengths(self) -> np.ndarray:
        """[N] int64 speech samples: source_length.scp, else file headers (0 where unreadable
        under "skip"; the load then reports the file)."""
        if self._lengths is None:
            lengths = np.zeros(len(self), np.int64)
            for i, e in enumerate(self.speech):
                if e.uid in self._table_lengths:
                    lengths[i] = self._table_lengths[e.uid]
                    continue
                try:
                    lengths[i] = _header_length(e.path, e.fs)
                except BadFileError:
                    if self.counter.policy == "raise":
                        raise
            self._lengths = lengths
        return self._lengths

    def rir_num_samples(self, fs: int) -> int:
        """The longest RIR `load` returns at speech rate fs."""
        return math.ceil(self.max_rir_duration_s * fs)

    def _file_length(self, entry: SourceEntry) -> int:
        if entry.uid in self._table_lengths:
            return self._table_lengths[entry.uid]
        return _header_length(entry.path, entry.fs)

    @staticmethod
    def _pick(
        pool: dict[int, np.ndarray], fs: int, rng: np.random.Generator, exclude: set[int]
    ) -> int | None:
        """Uniform draw among files at rate fs, else at a random higher rate; None if neither.
        Files in `exclude` (found bad during this draw) do not count."""
        candidates = {r: np.setdiff1d(m, list(exclude)) if exclude else m for r, m in pool.items()}
        if len(candidates.get(fs, ())):
            rate = fs
        else:
            higher = [r for r in sorted(candidates) if r > fs and len(candidates[r])]
            if not higher:
                return None
            rate = higher[int(rng.integers(len(higher)))]
        members = candidates[rate]
        return int(members[int(rng.integers(len(members)))])

    def _load_noise(
        self, i: int, fs: int, num_samples: int, rng: np.random.Generator
    ) -> np.ndarray:
        """A random segment of noise file i: <= num_samples at rate fs (read at the file rate)."""
        e = self.noise[i]
        needed = math.ceil(num_samples * e.fs / fs)  # file-rate samples covering num_samples
        start, num = _random_window(self._file_length(e), needed, rng)
        min_len = _min_length(self.min_duration_s, e.fs, needed)
        x = read_checked(e.path, e.fs, start=start, num_samples=num, min_num_samples=min_len)
        if e.fs != fs:
            x = resample_numpy(x, e.fs, fs)[:num_samples]
            if float(np.max(np.abs(x))) <= SILENT_PEAK:  # all its energy was above fs / 2
                raise BadFileError(e.path, "silent", f"silent after resampling to {fs} Hz")
        return x

    def _load_rir(self, i: int, fs: int) -> np.ndarray:
        """RIR file i from its first sample, truncated at the end after max_rir_duration_s."""
        e = self.rir[i]
        num = math.floor(self.max_rir_duration_s * e.fs)
        x = read_checked(e.path, e.fs, num_samples=num)
        if e.fs != fs:
            x = resample_numpy(x, e.fs, fs)
        return x[: self.rir_num_samples(fs)]

    def _draw(self, kind: str, pool, fs: int, rng, skipped, load_one, required: bool = False):
        """(index, audio) of the first good draw from pool, or (-1, None) when nothing qualifies
        (RuntimeError if `required` and some files were bad); bad files are excluded from the
        following draws of this item."""
        bad: set[int] = set()
        for _ in range(self.max_retries + 1):
            i = self._pick(pool, fs, rng, bad)
            if i is None:
                break
            try:
                return i, load_one(i)
            except BadFileError as e:
                self.counter.report(e)
                skipped[REASONS.index(e.reason)] += 1
                bad.add(i)
        if required and bad:
            raise RuntimeError(f"no usable {kind} at {fs} Hz or above ({len(bad)} bad files tried)")
        return -1, None

    def __getitem__(self, index: int) -> dict:
        return self.load(int(index), np.random.default_rng(int(index)))

    def load(
        self, index: int, rng: np.random.Generator, max_num_samples: int | None = -1
    ) -> dict:
        """Item `index` (or its replacement); max_num_samples -1 means the source's default."""
        if max_num_samples == -1:
            max_num_samples = self.max_num_samples
        lengths = self.lengths()

        def load_speech(i: int) -> np.ndarray:
            e = self.speech[i]
            start, num = _random_window(int(lengths[i]), max_num_samples, rng)
            min_len = _min_length(self.min_duration_s, e.fs, max_num_samples)
            return read_checked(e.path, e.fs, start=start, num_samples=num, min_num_samples=min_len)

        speech, index, skipped = _load_with_retries(
            load_speech, self._grouped, index, self.max_retries, self.counter
        )
        fs, n = int(self._fs[index]), speech.size

        def load_noise(i: int) -> np.ndarray:
            return self._load_noise(i, fs, n, rng)

        noise_index, noise = -1, None
        if rng.random() < self.p_wind:  # falls back to ordinary noise when no wind file qualifies
            noise_index, noise = self._draw(
                "wind noise", self._wind_pool, fs, rng, skipped, load_noise
            )
        use_wind = noise is not None
        if noise is None:
            noise_index, noise = self._draw(
                "noise", self._noise_pool, fs, rng, skipped, load_noise, required=True
            )
        rir_index, rir = -1, None
        if rng.random() < self.p_reverb:
            rir_index, rir = self._draw(
                "rir", self._rir_pool, fs, rng, skipped, lambda i: self._load_rir(i, fs)
            )
        noise_entry = self.noise[noise_index]
        rir_entry = self.rir[rir_index] if rir_index >= 0 else None
        return {
            "speech": speech,
            "noise": noise,
            "rir": rir if rir is not None else np.zeros(0, np.float32),
            "is_wind": np.bool_(use_wind),
            "fs": np.int32(fs),
            "noise_fs": np.int32(noise_entry.fs),
            "rir_fs": np.int32(rir_entry.fs if rir_entry else 0),
            "index": np.int32(index),
            "noise_index": np.int32(noise_index),
            "rir_index": np.int32(rir_index),
            "skipped": skipped,
            "speech_uid": self.speech[index].uid,
            "noise_uid": noise_entry.uid,
            "rir_uid": rir_entry.uid if rir_entry else "",
        }
