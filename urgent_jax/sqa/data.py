"""Track 2 data: the `data.jsonl` format (REFERENCE.md §1.5) and the SQA Grain loader (§3.7).

    records = read_jsonl("data/bvcc/train/data.jsonl")
    it = make_sqa_loader(["data/bvcc/train/data.jsonl"], ["mos"], seed=42)
    batch = next(it)   # audio [B, T] f32 16 kHz, lengths [B] i32, labels [B, M] f32 (NaN: missing),
                       # valid [B] bool, sample_id / system_id [B] object, skipped int
    it.plan.batches_per_epoch

Batching follows Uni-VERSA-Ext: items sorted by duration (int(duration * 16000) samples, ties in
input order) are packed greedily into batches of at most `max_total_samples` real samples and
`max_batch_size` items; an item longer than the cap is dropped (counted and logged); the last
partial batch is kept; the batch order is shuffled per epoch by `seed + epoch` (`shuffle=False`:
duration order every epoch, the inference mode with `num_epochs=1`). Unlike the reference, shapes
are static for jit: B is padded to a power of two (at most max_batch_size, a multiple of the
process count) and T to one of `num_buckets` lengths, so at most `plan.max_num_shapes` (B, T)
shapes occur. Padding rows have valid False, lengths 0, labels NaN and ids ''. With several
processes every process builds the same global plan and takes rows p::P of each padded global
batch (all pad to the same T).

Audio: soundfile read, every channel resampled to 16 kHz with `resample_sinc_hann_numpy` (the
reference's torchaudio `functional.resample` defaults) and averaged, as the reference does. A bad
file (missing, unreadable, empty, non-finite, or longer than its data.jsonl duration allows: more than
int(duration * 16000) + LENGTH_SLACK samples, reason "duration_mismatch") is skipped and counted
(`BadFileCounter`): its row keeps its ids but has valid False, lengths 0 and NaN labels; policy
"raise" raises `BadFileError` instead. Audio is never cut to fit the planned length. Mask rows
with `jnp.where(valid, ...)`, not by multiplying (NaN * 0 is NaN).

Degradation (`degrade=dict(p=0.5, ...)`, see `Degrade` and DEGRADE_DEFAULTS; in the configs
`--config.data.degrade.p=0.5`) is an augmentation for robustness: the labels are kept unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np

from urgent_jax.audio.io import AudioFileError, audio_exists, read_audio
from urgent_jax.audio.resample import resample_sinc_hann_numpy
from urgent_jax.data.pipeline import (
    INFINITE,
    DataIterator,
    _ensure_absl_flags,
    bucket_lengths,
)
from urgent_jax.data.sources import (
    NUM_REASONS,
    REASONS,
    BadFileCounter,
    BadFileError,
    SkipPolicy,
    resolve_path,
)
from urgent_jax.simulation.distortions import bandwidth_limit, clip_quantiles, packet_loss

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("audio_path", "system_id", "sample_id", "duration", "metrics")
SAMPLE_RATE = 16000  # Hz, the model input rate (§3.7)
LENGTH_SLACK = 64  # samples added to the longest planned length: durations carry 3 decimals
MAX_DURATION_S = 24 * 3600.0  # a data.jsonl duration above this is a corrupt line, not audio


class JsonlError(ValueError):
    """A malformed data.jsonl line; the message starts with `path:line`."""


# --- data.jsonl -----------------------------------------------------------------------------------


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _as_float(x) -> float:
    """float(x) of a number; inf for an int too large for a float (JSON allows 1e400 as an int)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf


def _check_record(obj, where: str) -> dict:
    if not isinstance(obj, dict):
        raise JsonlError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise JsonlError(f"{where}: missing key(s) {missing}")
    for key in ("audio_path", "system_id", "sample_id"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise JsonlError(f"{where}: {key} must be a non-empty string, got {obj[key]!r}")
    duration = _as_float(obj["duration"]) if _is_number(obj["duration"]) else None
    if duration is None or not 0 <= duration < math.inf:  # NaN fails both comparisons
        raise JsonlError(f"{where}: duration must be a number >= 0 and finite (s), "
                         f"got {obj['duration']!r}")  # fmt: skip
    if duration > MAX_DURATION_S:
        raise JsonlError(f"{where}: duration {duration!r} s is over {MAX_DURATION_S / 3600:g} h "
                         "(seconds expected; a corrupt line?)")  # fmt: skip
    if not isinstance(obj["metrics"], dict):
        raise JsonlError(f"{where}: metrics must be an object, got {obj['metrics']!r}")
    metrics = {}
    for name, value in obj["metrics"].items():
        if value is None:
            value = math.nan
        if not _is_number(value) or math.isinf(_as_float(value)):
            raise JsonlError(f"{where}: metric {name!r} must be a number (finite, or NaN / "
                             f"null), got {value!r}")  # fmt: skip
        metrics[name] = float(value)
    return {**obj, "duration": duration, "metrics": metrics}


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a data.jsonl, validated (keys REQUIRED_KEYS; duration finite, >= 0 and at most
    MAX_DURATION_S; metric values finite, NaN / null -> NaN; (sample_id, system_id) unique).

    A relative audio_path is kept if it exists as given (from the current directory), else it is
    resolved against the jsonl's directory. Raises JsonlError naming `path:line`.
    """
    path = Path(path)
    records, first_line = [], {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                obj = json.loads(line)  # accepts NaN, as Python's json writes it
            except json.JSONDecodeError as e:
                raise JsonlError(f"{where}: invalid JSON ({e})") from None
            record = _check_record(obj, where)
            key = (record["sample_id"], record["system_id"])
            if key in first_line:
                raise JsonlError(f"{where}: duplicate (sample_id, system_id) {key} (first at line "
                                 f"{first_line[key]})")  # fmt: skip
            first_line[key] = line_number
            record["audio_path"] = resolve_path(record["audio_path"], path.parent)
            records.append(record)
    return records


def write_jsonl(path: str | os.PathLike, records: Sequence[dict]) -> None:
    """Write records sorted by sample_id (duration 3 decimals, metrics 4 decimals, NaN as NaN)."""
    lines = []
    for i, record in enumerate(sorted(records, key=lambda r: r["sample_id"])):
        record = _check_record(record, f"record {record.get('sample_id', i)!r}")
        item = {
            "audio_path": str(record["audio_path"]),
            "system_id": record["system_id"],
            "sample_id": record["sample_id"],
            "duration": round(record["duration"], 3),
            "metrics": {k: round(v, 4) for k, v in record["metrics"].items()},
        }
        lines.append(json.dumps(item) + "\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


# --- batch plan -----------------------------------------------------------------------------------


def plan_batches(
    durations_samples: Sequence[int] | np.ndarray, max_total_samples: int, max_batch_size: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Uni-VERSA-Ext dynamic batching (§3.7): (batches, dropped).

    Items sorted by length (stable) are appended to the current batch while its total stays
    <= max_total_samples and it has < max_batch_size items; otherwise the batch is closed and the
    item starts the next one, or is dropped if it alone exceeds the cap. The last partial batch is
    kept. batches: int64 item indices, in sorted order; dropped: int64 indices.
    """
    lengths = np.asarray(durations_samples, np.int64)
    order = np.argsort(lengths, kind="stable")
    batches, dropped, current, total = [], [], [], 0
    for i in order:
        n = int(lengths[i])
        if total + n <= max_total_samples and len(current) < max_batch_size:
            current.append(i)
            total += n
            continue
        if current:
            batches.append(np.array(current, np.int64))
        if n <= max_total_samples:
            current, total = [i], n
        else:
            dropped.append(i)
            current, total = [], 0
    if current:
        batches.append(np.array(current, np.int64))
    return batches, np.array(dropped, np.int64)


def padded_batch_sizes(max_batch_size: int, shard_count: int = 1) -> np.ndarray:
    """Allowed padded batch sizes: powers of two below max_batch_size and max_batch_size itself,
    each rounded up to a multiple of shard_count (duplicates dropped)."""
    sizes = {1 << k for k in range(max(max_batch_size, 1).bit_length()) if 1 << k < max_batch_size}
    sizes.add(max_batch_size)
    return np.array(sorted({-(-s // shard_count) * shard_count for s in sizes}), np.int64)


class SQABatchPlan:
    """Deterministic global batch plan and this process's shard of it (a Grain source).

    Item g (global batch counter) -> dict with `global_index`, `epoch` (int64), `padded_length`
    (int32, samples) and this shard's rows: `indices` (int64 [B/P] into the records, -1 on padding
    rows) and `valid` (bool [B/P]). (epoch, batch) = divmod(g, batches_per_epoch).
    """

    def __init__(
        self,
        lengths: np.ndarray,
        *,
        max_total_samples: int,
        max_batch_size: int,
        seed: int,
        shuffle: bool = True,
        num_epochs: int | None = None,
        num_buckets: int = 8,
        shard_index: int = 0,
        shard_count: int = 1,
    ):
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
        self.seed, self.shuffle, self.num_epochs = int(seed), shuffle, num_epochs
        self.shard_index, self.shard_count = int(shard_index), int(shard_count)
        self.lengths = np.asarray(lengths, np.int64)
        self.batches, self.dropped = plan_batches(self.lengths, max_total_samples, max_batch_size)
        if not self.batches:
            raise ValueError(f"no batch: all {len(self.lengths)} items are above the cap "
                             f"({max_total_samples} samples) or there are none")  # fmt: skip
        self.batches_per_epoch = len(self.batches)
        self.batch_sizes = padded_batch_sizes(max_batch_size, shard_count)
        longest = max(int(self.lengths[b].max()) for b in self.batches)
        self.bucket_lengths = bucket_lengths(longest + LENGTH_SLACK, num_buckets)
        # Padded (B, T) of each planned batch: fixed, whatever the epoch order.
        self._rows = np.array([self._fit(self.batch_sizes, len(b)) for b in self.batches])
        self._padded = np.array(
            [self._fit(self.bucket_lengths, self.lengths[b].max() + LENGTH_SLACK)
             for b in self.batches]
        )  # fmt: skip

    @staticmethod
    def _fit(sizes: np.ndarray, n: int) -> int:
        return int(sizes[min(np.searchsorted(sizes, n), len(sizes) - 1)])

    @property
    def max_num_shapes(self) -> int:
        """Upper bound on distinct (B, T) shapes: #batch sizes x #length buckets."""
        return len(self.batch_sizes) * len(self.bucket_lengths)

    @property
    def num_dropped(self) -> int:
        return len(self.dropped)

    def order(self, epoch: int) -> np.ndarray:
        """Batch order of one epoch: a permutation seeded by seed + epoch (identity unshuffled)."""
        if not self.shuffle:
            return np.arange(self.batches_per_epoch)
        return np.random.default_rng(self.seed + epoch).permutation(self.batches_per_epoch)

    def __len__(self) -> int:
        return INFINITE if self.num_epochs is None else self.num_epochs * self.batches_per_epoch

    def __getitem__(self, global_index: int) -> dict:
        epoch, b = divmod(int(global_index), self.batches_per_epoch)
        if self.num_epochs is not None and epoch >= self.num_epochs:
            raise IndexError(f"batch {global_index} beyond {self.num_epochs} epoch(s)")
        k = int(self.order(epoch)[b])
        members, rows = self.batches[k], int(self._rows[k])
        indices = np.full(rows, -1, np.int64)
        indices[: len(members)] = members
        shard = slice(self.shard_index, None, self.shard_count)
        return {
            "global_index": np.int64(global_index),
            "epoch": np.int64(epoch),
            "padded_length": np.int32(self._padded[k]),
            "indices": indices[shard],
            "valid": (indices >= 0)[shard],
        }


# --- loading (runs in Grain workers: numpy only) --------------------------------------------------


class SQASource:
    """Records of one or more data.jsonl: `load(i)` -> mono float32 [T] at sample_rate, reporting
    bad files to `counter` (policy "skip": returns None)."""

    def __init__(
        self,
        records: Sequence[dict],
        metric_names: Sequence[str],
        *,
        sample_rate: int = SAMPLE_RATE,
        policy: SkipPolicy = "skip",
    ):
        self.sample_rate = int(sample_rate)
        self.metric_names = tuple(metric_names)
        self.paths = [r["audio_path"] for r in records]
        self.sample_ids = np.array([r["sample_id"] for r in records] + [""], object)
        self.system_ids = np.array([r["system_id"] for r in records] + [""], object)
        # Last row (index -1) is the padding row: '' ids, NaN labels.
        labels = [[r["metrics"].get(m, math.nan) for m in self.metric_names] for r in records]
        self.labels = np.full((len(records) + 1, len(self.metric_names)), np.nan, np.float32)
        self.labels[: len(records)] = np.asarray(labels, np.float32).reshape(len(records), -1)
        self.durations = np.array([r["duration"] for r in records], np.float64)  # s
        self.lengths = (self.durations * self.sample_rate).astype(np.int64)
        # ^ the reference's frame count: int(duration * rate)
        self.counter = BadFileCounter(policy)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> np.ndarray:
        """Item `index` as mono float32 [T] at sample_rate; BadFileError if unusable."""
        path = self.paths[index]
        if not audio_exists(path):
            raise BadFileError(path, "missing", "no such file")
        try:
            x, sr = read_audio(path)  # [C, T] at the file's rate
        except AudioFileError as e:
            raise BadFileError(path, "unreadable", str(e).removeprefix(f"{path}: ")) from None
        if x.shape[-1] == 0:
            raise BadFileError(path, "empty", "no samples")
        if not np.all(np.isfinite(x)):
            raise BadFileError(path, "non_finite", "NaN or inf samples")
        x = resample_sinc_hann_numpy(x, sr, self.sample_rate).mean(axis=0)
        limit = int(self.lengths[index]) + LENGTH_SLACK  # what the batch plan pads for
        if x.size > limit:
            raise BadFileError(path, "duration_mismatch",
                               f"{x.size} samples at {self.sample_rate} Hz, but its data.jsonl "
                               f"duration {self.durations[index]:g} s gives "
                               f"{int(self.lengths[index])} (+{LENGTH_SLACK} allowed)")  # fmt: skip
        return x

    def load(self, index: int) -> tuple[np.ndarray | None, int]:
        """(audio, -1), or (None, reason index into REASONS) for a bad file under "skip"."""
        try:
            return self.read(index), -1
        except BadFileError as e:
            self.counter.report(e)  # re-raises under policy "raise"
            return None, REASONS.index(e.reason)


class LoadBatch:
    """Plan record -> {audio [B, T] f32, lengths [B] i32, labels [B, M] f32, valid [B] bool,
    index [B] i32 (-1: padding), skipped_reasons [NUM_REASONS] i32, epoch, global_index}."""

    def __init__(self, source: SQASource):
        self.source = source

    def __call__(self, record: dict) -> dict:
        num_samples, indices = int(record["padded_length"]), record["indices"]
        audio = np.zeros((len(indices), num_samples), np.float32)
        lengths = np.zeros(len(indices), np.int32)
        valid = record["valid"].copy()
        skipped = np.zeros(NUM_REASONS, np.int32)
        for k, i in enumerate(indices):
            if i < 0:
                continue
            x, reason = self.source.load(int(i))
            if x is None:
                skipped[reason] += 1
                valid[k] = False
                continue
            # read() bounds x.size by the planned length + LENGTH_SLACK <= num_samples.
            audio[k, : x.size], lengths[k] = x, x.size
        labels = self.source.labels[indices]
        labels[~valid] = np.nan
        return {
            "audio": audio,
            "lengths": lengths,
            "labels": labels,
            "valid": valid,
            "index": indices.astype(np.int32),
            "skipped_reasons": skipped,
            "epoch": record["epoch"],
            "global_index": record["global_index"],
        }


# --- degradation (main process, jax on the host CPU) ----------------------------------------------

DEGRADATIONS = ("bandwidth_limitation", "clipping", "packet_loss")
# The keyword arguments of `Degrade` with their defaults: the one place they are set (the SQA
# configs' `data.degrade` section is built from it). p = 0 turns the degradation off.
DEGRADE_DEFAULTS = {
    "p": 0.0,  # probability per item
    "kinds": DEGRADATIONS,  # one drawn uniformly per degraded item
    "bandwidth_fs": (4000, 8000, 12000),  # effective rates, Hz
    "clip_q": (0.0, 0.1),  # range of the clipping quantile q: clip to [q, 1 - q]
    "loss_rate": (0.05, 0.25),  # range of the packet-loss rate (20 ms packets)
}


@functools.partial(jax.jit, static_argnames=("sample_rate", "kinds"))
def degrade_batch(key, audio, lengths, index, p, bandwidth_fs, clip_q, loss_rate, *,
                  sample_rate: int, kinds: tuple[str, ...]):  # fmt: skip
    """Degrade each row (index >= 0) with probability p by one distortion drawn from `kinds`.

    Row keys are fold_in(key, index): a function of (key, item) only, not of the batch. Bandwidth:
    a random filter (BANDWIDTH_EDGES) to an effective rate drawn from bandwidth_fs [K] (Hz);
    clipping to the [q, 1 - q] sample quantiles, q ~ U(clip_q[0], clip_q[1]); packet loss: 20 ms
    packets lost i.i.d. at a rate ~ U(loss_rate[0], loss_rate[1]). audio [B, T] f32, lengths /
    index [B] -> [B, T]. Distortions absent from `kinds` are not traced.
    """
    num_packets = -(-audio.shape[-1] // (20 * sample_rate // 1000))
    bandwidth_fs = jnp.asarray(bandwidth_fs, jnp.int32)
    clip_q, loss_rate = jnp.asarray(clip_q, jnp.float32), jnp.asarray(loss_rate, jnp.float32)

    def draw(k):
        ks = jax.random.split(k, 7)
        return {
            "apply": jax.random.uniform(ks[0]) < p,
            "kind": jax.random.randint(ks[1], (), 0, len(kinds)),
            "method": jax.random.randint(ks[2], (), 0, 4),
            "fs_new": bandwidth_fs[jax.random.randint(ks[3], (), 0, bandwidth_fs.shape[0])],
            "q": jax.random.uniform(ks[4], (), jnp.float32, clip_q[0], clip_q[1]),
            "rate": jax.random.uniform(ks[5], (), jnp.float32, loss_rate[0], loss_rate[1]),
            "lost": jax.random.uniform(ks[6], (num_packets,)),
        }

    d = jax.vmap(lambda i: draw(jax.random.fold_in(key, i)))(index)
    on = d["apply"] & (index >= 0)
    x = audio
    if "bandwidth_limitation" in kinds:
        use = on & (d["kind"] == kinds.index("bandwidth_limitation"))
        x = bandwidth_limit(x, lengths, sample_rate, jnp.where(use, d["method"], -1), d["fs_new"])
    if "clipping" in kinds:
        use = on & (d["kind"] == kinds.index("clipping"))
        x = clip_quantiles(x, lengths, jnp.where(use, d["q"], 0.0), jnp.where(use, 1 - d["q"], 1.0))
    if "packet_loss" in kinds:
        use = on & (d["kind"] == kinds.index("packet_loss"))
        x = packet_loss(x, lengths, use[:, None] & (d["lost"] < d["rate"][:, None]), sample_rate)
    return x


class Degrade:
    """Main-process batch transform: on-the-fly degradation with [Simulation] distortions that need
    no extra source files, as augmentation (labels unchanged). Row key =
    fold_in(fold_in(PRNGKey(seed), epoch), item index): the same item in the same epoch is degraded
    the same way whatever its batch, and differently in other epochs.

    p: probability per item (0: every batch passes unchanged); kinds: subset of DEGRADATIONS (one
    drawn uniformly per degraded item); bandwidth_fs: effective rates (Hz, < sample_rate); clip_q:
    range of the clipping quantile q (clip to [q, 1 - q]); loss_rate: range of the packet-loss
    rate. Defaults: DEGRADE_DEFAULTS. Runs on the host CPU backend.
    """

    def __init__(
        self,
        seed: int,
        *,
        sample_rate: int = SAMPLE_RATE,
        p: float = DEGRADE_DEFAULTS["p"],
        kinds: Sequence[str] = DEGRADE_DEFAULTS["kinds"],
        bandwidth_fs: Sequence[int] = DEGRADE_DEFAULTS["bandwidth_fs"],
        clip_q: tuple[float, float] = DEGRADE_DEFAULTS["clip_q"],
        loss_rate: tuple[float, float] = DEGRADE_DEFAULTS["loss_rate"],
    ):
        unknown = set(kinds) - set(DEGRADATIONS)
        if unknown or not kinds:
            raise ValueError(f"degrade kinds must be a non-empty subset of {DEGRADATIONS}, "
                             f"got {tuple(kinds)}")  # fmt: skip
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"degrade p must be in [0, 1], got {p}")
        if any(f >= sample_rate for f in bandwidth_fs):
            raise ValueError(f"bandwidth_fs {tuple(bandwidth_fs)} must be below {sample_rate} Hz")
        self.seed, self.sample_rate, self.kinds = int(seed), int(sample_rate), tuple(kinds)
        self.p = float(p)
        self.params = (
            np.float32(p),
            np.asarray(bandwidth_fs, np.int32),
            np.asarray(clip_q, np.float32),
            np.asarray(loss_rate, np.float32),
        )

    def __call__(self, batch: dict) -> dict:
        if self.p == 0.0:
            return batch
        with jax.default_device(jax.local_devices(backend="cpu")[0]):
            key = jax.random.fold_in(jax.random.PRNGKey(self.seed), int(batch["epoch"]))
            audio = degrade_batch(
                key, batch["audio"], batch["lengths"], batch["index"], *self.params,
                sample_rate=self.sample_rate, kinds=self.kinds,
            )  # fmt: skip
            audio = np.asarray(audio)
        return {**batch, "audio": audio}


# --- the iterator ---------------------------------------------------------------------------------


class SQAIterator(DataIterator):
    """`DataIterator` over SQA batches: adds sample_id / system_id (object [B], '' on padding rows)
    and `skipped` (bad files in this batch) in the main process. Checkpointable like DataIterator:
    `grain.checkpoint.CheckpointSave(it)` / get_state(), set_state().
    `it.plan.batches_per_epoch`; `it.max_num_shapes` bounds the distinct (B, T) shapes."""

    def __next__(self) -> dict:
        batch = next(self.grain_iterator)
        reasons = batch.pop("skipped_reasons")
        self.bad_files.add_counts(reasons)
        index = batch["index"]
        batch["sample_id"] = self.source.sample_ids[index]  # index -1 -> the '' row
        batch["system_id"] = self.source.system_ids[index]
        batch["skipped"] = int(reasons.sum())
        shape = batch["audio"].shape
        if shape not in self.shapes:
            self.shapes.add(shape)
            logger.info("new SQA batch shape (batch, samples) = %s [%d of at most %d]",
                        shape, len(self.shapes), self.plan.max_num_shapes)  # fmt: skip
        if self.transform is not None:
            batch = self.transform(batch)
        self.num_batches += 1
        return batch

    @property
    def max_num_shapes(self) -> int:
        return self.plan.max_num_shapes


def make_sqa_loader(
    jsonl_paths: str | os.PathLike | Sequence[str | os.PathLike],
    metric_names: Sequence[str],
    *,
    max_total_samples: int = 9_600_000,
    max_batch_size: int = 128,
    seed: int = 42,
    num_epochs: int | None = None,
    shuffle: bool = True,
    shard_index: int = 0,
    shard_count: int = 1,
    num_workers: int = 0,
    max_duration_s: float | None = None,
    degrade: Mapping | None = None,
    sample_rate: int = SAMPLE_RATE,
    num_buckets: int = 8,
    policy: SkipPolicy = "skip",
    num_threads: int = 4,
    prefetch_buffer_size: int = 8,
) -> SQAIterator:
    """SQA batches over one or more data.jsonl files (module docstring; REFERENCE.md §3.7).

    max_total_samples / max_batch_size: the global batch caps (real samples at sample_rate, items);
    the training reference uses 9,600,000 / 128, inference 4,800,000. num_epochs None = endless.
    max_duration_s drops longer items (as the cap does). Each process gets rows
    shard_index::shard_count of every global batch. degrade: None or keyword arguments of
    `Degrade` (p, kinds, bandwidth_fs, clip_q, loss_rate; missing ones from DEGRADE_DEFAULTS),
    keyed by `seed`; p = 0 (the default) leaves the audio untouched; labels are unchanged.
    """
    if isinstance(jsonl_paths, str | os.PathLike):
        jsonl_paths = [jsonl_paths]
    records = [r for path in jsonl_paths for r in read_jsonl(path)]
    source = SQASource(records, metric_names, sample_rate=sample_rate, policy=policy)
    lengths = source.lengths
    if max_duration_s is not None:
        too_long = lengths > max_duration_s * sample_rate
        if too_long.any():
            logger.warning("dropping %d item(s) longer than max_duration_s=%g s",
                           int(too_long.sum()), max_duration_s)  # fmt: skip
        # Above the cap: plan_batches drops them.
        lengths = np.where(too_long, max_total_samples + 1, lengths)
    plan = SQABatchPlan(
        lengths, max_total_samples=max_total_samples, max_batch_size=max_batch_size, seed=seed,
        shuffle=shuffle, num_epochs=num_epochs, num_buckets=num_buckets, shard_index=shard_index,
        shard_count=shard_count,
    )  # fmt: skip
    if plan.num_dropped:
        examples = [source.sample_ids[i] for i in plan.dropped[:5]]
        logger.warning("dropped %d item(s) above the batch cap (%d samples or max_duration_s), "
                       "e.g. %s", plan.num_dropped, max_total_samples, examples)  # fmt: skip
    logger.info("SQA loader: %d items, %d batches per epoch, at most %d shapes",
                len(source) - plan.num_dropped, plan.batches_per_epoch,
                plan.max_num_shapes)  # fmt: skip
    read_options = grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size
    )
    dataset = grain.MapDataset.source(plan).map(LoadBatch(source)).to_iter_dataset(read_options)
    if num_workers > 0:
        _ensure_absl_flags()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    transform = None
    if degrade is not None:  # built (and so checked) even when off
        transform = Degrade(seed, sample_rate=sample_rate, **degrade)
        if transform.p == 0.0:
            transform = None
    return SQAIterator(dataset, plan, source, transform=transform, num_workers=num_workers)

