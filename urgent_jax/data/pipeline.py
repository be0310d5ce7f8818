"""Config -> Grain pipeline: batch plan (fs groups, length buckets, shuffles, process shards),
loading and padding in workers, optional dynamic mixing in the main process, checkpointable state.

    it = make_presimulated_loader(set_dir, batch_size=8, seed=0, max_num_samples=96000)
    it = make_dynamic_mixing_loader(sources_dir, batch_size=8, seed=0, mixing="loader")
    batch = next(it)     # dict of numpy arrays, one sampling rate per batch
    mngr.save(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))

The plan (`BatchPlan`, REFERENCE.md §2.12 in intent) maps a global batch counter g to
(epoch, batch) = divmod(g, batches_per_epoch), so the Grain iterator state is one counter and a
resumed run sees the same batches. Per epoch, seeded by (seed, epoch): items grouped by rate and
sorted by (cropped) length are cut into chunks of `chunk_batches` batches; chunk order and the order
inside each chunk are shuffled, chunks are cut into batches of one rate, and the batch order is
shuffled. Every JAX process builds the same global plan and takes `items[p::P]` of each global
batch; all pad to the global batch's length, one of `num_buckets` lengths per rate, so the number
of distinct shapes (compiles) is at most (#rates x num_buckets).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable
from typing import Literal

import grain
import jax
import numpy as np

from urgent_jax.data.sources import (
    NUM_REASONS,
    BadFileCounter,
    DynamicMixingSource,
    PresimulatedSource,
    SkipPolicy,
)
from urgent_jax.simulation.mixer import Sources, simulate_batch

logger = logging.getLogger(__name__)

INFINITE = 2**61 - 1  # "endless" dataset length, as Grain's repeat()
SOURCES_FIELDS = Sources._fields  # speech, lengths, noise, noise_lengths, rir, rir_lengths, is_wind


def bucket_lengths(max_len: int, num_buckets: int, multiple: int = 256) -> np.ndarray:
    """Padded lengths [<= num_buckets] int64: linear steps up to max_len (the last is max_len
    itself, the others rounded up to a multiple of `multiple` samples, duplicates dropped)."""
    max_len = max(int(max_len), 1)
    steps = [
        math.ceil(max_len * k / num_buckets / multiple) * multiple for k in range(1, num_buckets)
    ]
    return np.array(sorted({s for s in steps if s < max_len} | {max_len}), np.int64)


class BatchPlan:
    """The deterministic global batch plan and this process's shard of it (a Grain source).

    Item g (global batch counter) -> dict with `global_index`, `epoch` (int64), `fs`,
    `padded_length` (int32) and this shard's `indices` (int64 [B/P], into the item source) and
    `valid` (bool [B/P]; False for fillers that complete the last batch of a rate when
    drop_remainder is False; fillers repeat a real item of the batch).
    lengths are in samples; items longer than max_num_samples count as max_num_samples (cropped).
    """

    def __init__(
        self,
        sample_rates: np.ndarray,
        lengths: np.ndarray,
        *,
        batch_size: int,
        seed: int,
        max_num_samples: int | None = None,
        num_buckets: int = 8,
        drop_remainder: bool = True,
        shard_index: int = 0,
        shard_count: int = 1,
        num_epochs: int | None = None,
        chunk_batches: int = 100,
    ):
        if batch_size % shard_count:
            raise ValueError(f"global batch size {batch_size} not divisible by {shard_count}")
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.shard_index, self.shard_count = int(shard_index), int(shard_count)
        self.drop_remainder, self.num_epochs = drop_remainder, num_epochs
        fs = np.asarray(sample_rates, np.int64)
        effective = np.asarray(lengths, np.int64)
        if max_num_samples is not None:
            effective = np.minimum(effective, max_num_samples)
        self.effective_lengths = effective
        self.bucket_lengths: dict[int, np.ndarray] = {}
        chunk_size = self.batch_size * chunk_batches
        self._chunks: list[np.ndarray] = []  # fixed content; order varies per epoch
        num_batches = 0
        for rate in np.unique(fs):
            members = np.flatnonzero(fs == rate)
            members = members[np.lexsort((members, effective[members]))]  # by length, then index
            max_len = max_num_samples if max_num_samples is not None else effective[members].max()
            self.bucket_lengths[int(rate)] = bucket_lengths(max_len, num_buckets)
            for start in range(0, len(members), chunk_size):
                chunk = members[start : start + chunk_size]
                self._chunks.append(chunk)
                num_batches += len(chunk) // self.batch_size
                num_batches += int(not drop_remainder and len(chunk) % self.batch_size > 0)
        if num_batches == 0:
            raise ValueError(f"no complete batch of {batch_size} items in any rate group")
        self.batches_per_epoch = num_batches
        self._fs = fs
        self._cache: dict[int, tuple[np.ndarray, ...]] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}

    @property
    def max_num_shapes(self) -> int:
        """Upper bound on distinct padded shapes: sum over rates of the bucket count."""
        return sum(len(b) for b in self.bucket_lengths.values())

    def padded_length(self, fs: int, max_length: int) -> int:
        """The smallest bucket length of rate fs that holds max_length samples."""
        buckets = self.bucket_lengths[int(fs)]
        return int(buckets[min(np.searchsorted(buckets, max_length), len(buckets) - 1)])

    def epoch(self, epoch: int) -> tuple[np.ndarray, ...]:
        """Global plan of one epoch: items [nb, B] int64, valid [nb, B] bool, fs [nb] int64,
        padded_length [nb] int64."""
        plan = self._cache.get(epoch)  # prefetch threads share the cache; a race only recomputes
        if plan is not None:
            return plan
        rng = np.random.default_rng([self.seed, epoch])
        items, valid = [], []
        for c in rng.permutation(len(self._chunks)):
            chunk = rng.permutation(self._chunks[c])
            num_full = len(chunk) // self.batch_size
            items += list(chunk[: num_full * self.batch_size].reshape(num_full, self.batch_size))
            valid += [np.ones(self.batch_size, bool)] * num_full
            rest = chunk[num_full * self.batch_size :]
            if len(rest) and not self.drop_remainder:
                fill = self.batch_size - len(rest)
                items.append(np.concatenate([rest, np.resize(rest, fill)]))
                valid.append(np.arange(self.batch_size) < len(rest))
        order = rng.permutation(len(items))
        items, valid = np.stack(items)[order], np.stack(valid)[order]
        fs = self._fs[items[:, 0]]
        longest = [self.effective_lengths[b].max() for b in items]
        lengths = [self.padded_length(r, n) for r, n in zip(fs, longest)]
        plan = (items, valid, fs, np.array(lengths, np.int64))
        if len(self._cache) >= 2:
            self._cache.pop(min(self._cache, default=epoch), None)
        self._cache[epoch] = plan
        return plan

    def __len__(self) -> int:
        return INFINITE if self.num_epochs is None else self.num_epochs * self.batches_per_epoch

    def __getitem__(self, global_index: int) -> dict:
        epoch, b = divmod(int(global_index), self.batches_per_epoch)
        items, valid, fs, lengths = self.epoch(epoch)
        shard = slice(self.shard_index, None, self.shard_count)
        return {
            "global_index": np.int64(global_index),
            "epoch": np.int64(epoch),
            "fs": np.int32(fs[b]),
            "padded_length": np.int32(lengths[b]),
            "indices": items[b, shard],
            "valid": valid[b, shard],
        }


# --- loading and padding (runs in Grain workers: numpy only) -------------------------------------


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Per-item crop / selection stream: a function of (seed, epoch, item) only."""
    return np.random.default_rng([seed, epoch, index])


def _common_fields(record: dict, index: np.ndarray, skipped: np.ndarray) -> dict:
    return {
        "fs": record["fs"],
        "index": index,
        "valid": record["valid"],
        "skipped": skipped.sum(0).astype(np.int32),
        "global_index": record["global_index"],
    }


class LoadPresimulated:
    """Plan record -> {noisy, target [B, T] f32, lengths [B] i32, fs, index, valid, skipped,
    global_index}, zero-padded to the record's padded_length."""

    def __init__(self, source: PresimulatedSource, seed: int):
        self.source, self.seed = source, seed

    def __call__(self, record: dict) -> dict:
        num_samples, indices = int(record["padded_length"]), record["indices"]
        noisy = np.zeros((len(indices), num_samples), np.float32)
        target, lengths = np.zeros_like(noisy), np.zeros(len(indices), np.int32)
        index, skipped = np.zeros_like(lengths), np.zeros((len(indices), NUM_REASONS), np.int32)
        for k, i in enumerate(indices):
            rng = _item_rng(self.seed, int(record["epoch"]), int(i))
            item = self.source.load(int(i), rng, num_samples)
            n = int(item["length"])
            noisy[k, :n], target[k, :n], lengths[k] = item["noisy"], item["target"], n
            index[k], skipped[k] = item["index"], item["skipped"]
        return {"noisy": noisy, "target": target, "lengths": lengths,
                **_common_fields(record, index, skipped)}  # fmt: skip


class LoadSources:
    """Plan record -> `Sources` fields as numpy (speech, noise [B, T], rir [B, Tr] f32, *lengths
    [B] i32, is_wind [B] bool) + fs, index, noise_index, rir_index, valid, skipped, global_index.
    Tr = source.rir_num_samples(fs), fixed per rate."""

    def __init__(self, source: DynamicMixingSource, seed: int):
        self.source, self.seed = source, seed

    def __call__(self, record: dict) -> dict:
        num_samples, indices = int(record["padded_length"]), record["indices"]
        fs = int(record["fs"])
        b = len(indices)
        out = {
            "speech": np.zeros((b, num_samples), np.float32),
            "noise": np.zeros((b, num_samples), np.float32),
            "rir": np.zeros((b, self.source.rir_num_samples(fs)), np.float32),
            **{k: np.zeros(b, np.int32) for k in ("lengths", "noise_lengths", "rir_lengths")},
            "is_wind": np.zeros(b, bool),
            **{k: np.zeros(b, np.int32) for k in ("index", "noise_index", "rir_index")},
        }
        skipped = np.zeros((b, NUM_REASONS), np.int32)
        for k, i in enumerate(indices):
            rng = _item_rng(self.seed, int(record["epoch"]), int(i))
            item = self.source.load(int(i), rng, num_samples)
            for name in ("speech", "noise", "rir"):
                length = "lengths" if name == "speech" else f"{name}_lengths"
                out[name][k, : item[name].size] = item[name]
                out[length][k] = item[name].size
            for name in ("is_wind", "noise_index", "rir_index"):
                out[name][k] = item[name]
            out["index"][k], skipped[k] = item["index"], item["skipped"]
        index = out.pop("index")
        return {**out, **_common_fields(record, index, skipped)}


class LoaderMixing:
    """Main-process batch transform: simulate a `LoadSources` batch with
    simulate_fn(key, Sources, sample_rate=fs) -> (Mixture, _), its config already bound (default:
    jitted `simulate_batch` with sim_config / simulate_kwargs bound statically), and return
    {noisy, target [B, T] f32, lengths, fs, index, valid, skipped, global_index}.

    key = fold_in(fold_in(PRNGKey(seed), global_index), process_index): a function of the batch
    counter, so resumed runs draw the same mixtures. use_cpu runs it on the host CPU backend (the
    accelerator stays free for the train step); one compile per batch shape.
    """

    def __init__(
        self,
        seed: int,
        process_index: int,
        *,
        simulate_fn: Callable | None = None,
        sim_config: dict | None = None,
        simulate_kwargs: dict | None = None,
        use_cpu: bool = True,
    ):
        self.seed, self.process_index = seed, process_index
        self.sim_config, self.simulate_kwargs = sim_config, dict(simulate_kwargs or {})
        # The config (strings, tuples) is bound statically, not traced.
        self.simulate_fn = simulate_fn or jax.jit(
            functools.partial(simulate_batch, sim_config=sim_config, **self.simulate_kwargs),
            static_argnames=("sample_rate",),
        )
        self.use_cpu = use_cpu

    def __call__(self, batch: dict) -> dict:
        device = jax.local_devices(backend="cpu")[0] if self.use_cpu else None
        with jax.default_device(device):
            key = jax.random.fold_in(jax.random.PRNGKey(self.seed), int(batch["global_index"]))
            key = jax.random.fold_in(key, self.process_index)
            sources = Sources(*(batch[name] for name in SOURCES_FIELDS))
            mixture, _ = self.simulate_fn(key, sources, sample_rate=int(batch["fs"]))
            noisy, target = np.asarray(mixture.noisy), np.asarray(mixture.target)
        keep = ("lengths", "fs", "index", "valid", "skipped", "global_index")
        return {"noisy": noisy, "target": target, **{k: batch[k] for k in keep}}


# --- the iterator ---------------------------------------------------------------------------------


class DataIterator:
    """Batches from a Grain iterator (`.grain_iterator`), with skip accounting, new-shape logging
    and an optional main-process transform.

    Checkpointable both ways with orbax: `grain.checkpoint.CheckpointSave(it)` (get_state -> JSON
    bytes, set_state, start_prefetch, as Grain's DataLoader iterator) or with `it.grain_iterator`.
    A restore needs a loader built with the same arguments, num_workers included.
    """

    def __init__(
        self,
        dataset: grain.IterDataset,
        plan: BatchPlan,
        source: PresimulatedSource | DynamicMixingSource,
        *,
        transform: Callable[[dict], dict] | None = None,
        num_workers: int = 0,
    ):
        self.plan, self.source, self.transform = plan, source, transform
        self.num_workers = num_workers
        # In-process the source's counter warns with paths; with workers, warn here from counts.
        self.bad_files = BadFileCounter("skip", log_warnings=num_workers > 0)
        self.shapes: set[tuple] = set()
        self.num_batches = 0
        self.grain_iterator = iter(dataset)

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> dict:
        batch = next(self.grain_iterator)
        self.bad_files.add_counts(batch["skipped"])
        shape = (int(batch["fs"]), *batch["noisy" if "noisy" in batch else "speech"].shape)
        if shape not in self.shapes:
            self.shapes.add(shape)
            logger.info("new batch shape (fs, batch, samples) = %s [%d]", shape, len(self.shapes))
        if self.transform is not None:
            batch = self.transform(batch)
        self.num_batches += 1
        return batch

    @property
    def num_shapes(self) -> int:
        """Distinct (fs, batch, samples) shapes seen so far."""
        return len(self.shapes)

    def get_state(self) -> bytes:
        return json.dumps(self.grain_iterator.get_state()).encode()

    def set_state(self, state: bytes | dict) -> None:
        if isinstance(state, bytes | str):
            state = json.loads(state)
        self.grain_iterator.set_state(state)

    def start_prefetch(self) -> None:
        self.grain_iterator.start_prefetch()

    def skipped(self) -> dict[str, int]:
        """reason -> bad files skipped in the batches yielded so far."""
        return self.bad_files.as_dict()

    def summary(self) -> str:
        """End-of-run text: batches, shapes, skip counts per reason and known bad paths."""
        counter = BadFileCounter("skip")
        counter.counts = self.bad_files.counts.copy()
        counter.paths = dict(self.source.counter.paths)  # filled in-process only
        lines = [
            f"data: {self.num_batches} batches, {self.num_shapes} distinct shapes "
            f"(bound {self.plan.max_num_shapes})",
            counter.summary(),
        ]
        if self.num_workers > 0 and counter.counts.any():
            lines.append("  (paths of files skipped in worker processes are in their warnings)")
        return "\n".join(lines)

    def close(self) -> None:
        """Log the summary and stop the workers."""
        summary = self.summary()
        (logger.warning if self.bad_files.counts.any() else logger.info)("%s", summary)
        close = getattr(self.grain_iterator, "close", None)
        if close is not None:
            close()


# --- builders -------------------------------------------------------------------------------------


def _ensure_absl_flags() -> None:
    """mp_prefetch reads absl flags; parse them (program name only) unless already parsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS(sys.argv[:1])


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if shard_index is None else shard_index
    count = jax.process_count() if shard_count is None else shard_count
    return int(index), int(count)


def _build(
    source,
    load_fn: Callable,
    *,
    batch_size: int,
    seed: int,
    max_num_samples: int | None,
    num_buckets: int,
    drop_remainder: bool,
    shard_index: int,
    shard_count: int,
    num_epochs: int | None,
    chunk_batches: int,
    num_workers: int,
    num_threads: int,
    prefetch_buffer_size: int,
    transform: Callable | None = None,
) -> DataIterator:
    plan = BatchPlan(
        source.sample_rates(), source.lengths(), batch_size=batch_size, seed=seed,
        max_num_samples=max_num_samples, num_buckets=num_buckets, drop_remainder=drop_remainder,
        shard_index=shard_index, shard_count=shard_count, num_epochs=num_epochs,
        chunk_batches=chunk_batches,
    )  # fmt: skip
    read_options = grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size
    )
    dataset = grain.MapDataset.source(plan).map(load_fn).to_iter_dataset(read_options)
    if num_workers > 0:
        _ensure_absl_flags()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return DataIterator(dataset, plan, source, transform=transform, num_workers=num_workers)


def make_presimulated_loader(
    set_dir: str,
    *,
    batch_size: int,
    seed: int = 0,
    max_num_samples: int | None = None,
    num_buckets: int = 8,
    num_workers: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    num_epochs: int | None = None,
    policy: SkipPolicy = "raise",
    chunk_batches: int = 100,
    num_threads: int = 4,
    prefetch_buffer_size: int = 8,
) -> DataIterator:
    """Batches {noisy, target [B, T] f32, lengths [B] i32, fs (one rate, Hz), index [B] i32,
    valid [B] bool, skipped [NUM_REASONS] i32, global_index} of a pre-simulated set.

    batch_size is global (B = batch_size / shard_count per process; shards default to the JAX
    process). max_num_samples crops longer items at a random offset (training; None = whole items,
    validation). num_epochs None = endless.
    """
    shard_index, shard_count = _shard(shard_index, shard_count)
    source = PresimulatedSource(set_dir, policy=policy)
    return _build(
        source, LoadPresimulated(source, seed), batch_size=batch_size, seed=seed,
        max_num_samples=max_num_samples, num_buckets=num_buckets, drop_remainder=drop_remainder,
        shard_index=shard_index, shard_count=shard_count, num_epochs=num_epochs,
        chunk_batches=chunk_batches, num_workers=num_workers, num_threads=num_threads,
        prefetch_buffer_size=prefetch_buffer_size,
    )  # fmt: skip


def make_dynamic_mixing_loader(
    sources_dir: str,
    *,
    batch_size: int,
    seed: int = 0,
    max_num_samples: int = 96000,
    mixing: Literal["loader", "step"] = "loader",
    sim_config: dict | None = None,
    simulate_kwargs: dict | None = None,
    simulate_fn: Callable | None = None,
    use_cpu: bool = True,
    p_wind: float = 0.05,
    p_reverb: float = 0.5,
    max_rir_duration_s: float = 2.0,
    sample_rates: tuple[int, ...] | None = None,
    num_buckets: int = 8,
    num_workers: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    num_epochs: int | None = None,
    policy: SkipPolicy = "skip",
    chunk_batches: int = 100,
    num_threads: int = 4,
    prefetch_buffer_size: int = 8,
) -> DataIterator:
    """Dynamic mixing over a Track 1 source directory (REFERENCE.md §2.11).

    mixing "step": batches of `Sources` fields as numpy (speech, lengths, noise, noise_lengths,
    rir, rir_lengths, is_wind) + fs, index, noise_index, rir_index, valid, skipped, global_index;
    the train step simulates. mixing "loader": the main process runs simulate_fn (default: jitted
    `simulate_batch` with sim_config / simulate_kwargs) on each batch (see `LoaderMixing`) and
    yields {noisy, target, lengths, fs, index, valid, skipped, global_index}.
    max_num_samples crops speech by samples whatever the rate (official DM: 96000). sample_rates
    keeps only speech at those rates (None: all).
    """
    if mixing not in ("loader", "step"):
        raise ValueError(f"mixing must be 'loader' or 'step', got {mixing!r}")
    shard_index, shard_count = _shard(shard_index, shard_count)
    source = DynamicMixingSource(
        sources_dir, p_wind=p_wind, p_reverb=p_reverb, max_num_samples=max_num_samples,
        max_rir_duration_s=max_rir_duration_s, policy=policy, sample_rates=sample_rates,
    )  # fmt: skip
    transform = None
    if mixing == "loader":
        transform = LoaderMixing(
            seed, shard_index, simulate_fn=simulate_fn, sim_config=sim_config,
            simulate_kwargs=simulate_kwargs, use_cpu=use_cpu,
        )  # fmt: skip
    return _build(
        source, LoadSources(source, seed), batch_size=batch_size, seed=seed,
        max_num_samples=max_num_samples, num_buckets=num_buckets, drop_remainder=drop_remainder,
        shard_index=shard_index, shard_count=shard_count, num_epochs=num_epochs,
        chunk_batches=chunk_batches, num_workers=num_workers, num_threads=num_threads,
        prefetch_buffer_size=prefetch_buffer_size, transform=transform,
    )  # fmt: skip
