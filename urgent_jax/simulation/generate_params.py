"""Draw simulation parameters for every source utterance and write an official-format meta.tsv.

    python -m urgent_jax.simulation.generate_params --sources DIR --out meta.tsv \
        [--config configs/simulation/validation.py] [--seed 0] [--output_dir DIR]

Drop-in for the official `generate_data_param.py`: DIR holds speech_sources.scp, the noise / wind-noise
/ RIR lists (official misspelt names accepted), utt2spk and text. Utterances are visited grouped by
sampling rate in descending order (file order within a rate); ids are `fileid_<n>` from 1 and audio
paths `<output_dir>/{noisy,clean}/<n // 5000>/fileid_<n>.<fmt>` (REFERENCE.md §1.2-§1.3).

Per-utterance parameters come from `params.sample_batch_params` (jax.random, keyed by seed, sampling
rate and position). Source selection follows §2.2 on the host with a numpy generator seeded by the
same seed: an unused noise / RIR at exactly the speech rate, else at a randomly ordered higher rate;
used ones move to a used pool that is searched the same way when reuse is allowed; lower-rate sources
are never used. Wind noise (probability p_wind) is always reusable. The wind and reverberation
decisions are taken here (they depend on what exists) and passed to the parameter sampler.

This CLI is the one module of simulation/ that reads manifests (data/manifest.py): its command path
is fixed by the official scripts it replaces (an allowed edge in tests/test_layering.py).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from urgent_jax import prepare_runtime
from urgent_jax.audio.io import audio_info
from urgent_jax.data.manifest import MetaRow, SourceEntry, read_source_dir, write_meta_tsv
from urgent_jax.simulation.params import (
    format_augmentation,
    max_packets,
    params_to_chain,
    sample_batch_params,
)

_REPO = Path(__file__).resolve().parents[2]
_CHUNK = 512  # utterances per vectorised parameter draw (bounds compiles and memory)


class SourcePool:
    """Sources of one kind grouped by rate, with the official used / unused bookkeeping."""

    def __init__(self, entries: list[SourceEntry], *, reuse: bool, track_use: bool = True):
        self.unused: dict[int, list[str]] = {}
        for e in entries:
            self.unused.setdefault(e.fs, []).append(e.uid)
        self.used: dict[int, list[str]] = {fs: [] for fs in self.unused}
        self.reuse = reuse
        self.track_use = track_use

    def __bool__(self) -> bool:
        return bool(self.unused)

    @staticmethod
    def _search(fs: int, pool: dict[int, list[str]], rng: np.random.Generator):
        if pool.get(fs):
            return fs, int(rng.integers(len(pool[fs])))
        rates = list(pool)
        rng.shuffle(rates)
        for rate in rates:
            if rate > fs and pool[rate]:
                return rate, int(rng.integers(len(pool[rate])))
        return None

    def select(self, fs: int, rng: np.random.Generator) -> str | None:
        """A source uid for speech at fs, or None when nothing at fs or above is left."""
        hit = self._search(fs, self.unused, rng)
        if hit is not None:
            rate, i = hit
            if not self.track_use:
                return self.unused[rate][i]
            uid = self.unused[rate].pop(i)
            self.used[rate].append(uid)
            return uid
        if self.reuse:
            hit = self._search(fs, self.used, rng)
            if hit is not None:
                return self.used[hit[0]][hit[1]]
        return None

    def has_rate_at_least(self, fs: int) -> bool:
        pools = [self.unused] + ([self.used] if self.reuse else [])
        return any(rate >= fs and uids for pool in pools for rate, uids in pool.items())


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def _speech_length(entry: SourceEntry, lengths: dict[str, int]) -> int:
    if entry.uid in lengths:
        return lengths[entry.uid]
    return audio_info(entry.path)[1]


@functools.lru_cache(maxsize=None)
def _sampler(num_packet_slots: int, cfg_items: tuple):
    """Jitted batched parameter draw, the rate traced: one compile for every rate."""
    cfg = dict(cfg_items)

    def draw(key, lengths, rates, use_wind, use_rir):
        return sample_batch_params(
            key, lengths, sample_rate=rates, use_wind=use_wind, use_rir=use_rir,
            num_packet_slots=num_packet_slots, **cfg,
        )  # fmt: skip

    return jax.jit(draw)


def generate_meta(
    sources_dir: str,
    *,
    output_dir: str,
    seed: int = 0,
    sample_params: dict | None = None,
    reuse_noise: bool = True,
    reuse_rir: bool = True,
    repeat_per_utt: int = 1,
    store_noise: bool = False,
    out_format: str = "flac",
    use_progress_bar: bool = True,
) -> list[MetaRow]:
    """All meta.tsv rows for the utterances of `sources_dir` (see the module docstring)."""
    cfg = dict(sample_params or {})
    p_wind = float(cfg.get("p_wind", 0.05))
    p_reverb = float(cfg.get("p_reverb", 0.5))
    tables = read_source_dir(sources_dir)
    noise = SourcePool(tables.noise, reuse=reuse_noise)
    wind = SourcePool(tables.wind_noise, reuse=True)
    rir = SourcePool(tables.rir, reuse=reuse_rir)
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    by_rate: dict[int, list[SourceEntry]] = {}
    for e in tables.speech:
        by_rate.setdefault(e.fs, []).append(e)

    rows: list[MetaRow] = []
    count = 0
    bar = tqdm(total=len(tables.speech) * repeat_per_utt, desc="meta.tsv", unit="utt",
               disable=not use_progress_bar)
    all_lengths = {e.uid: _speech_length(e, tables.lengths) for e in tables.speech}
    packets = max(max_packets(n, e.fs) for e in tables.speech for n in [all_lengths[e.uid]])
    slots = 1 << max(6, (packets - 1).bit_length())  # a power of two: one compile per corpus scale
    draw = _sampler(slots, tuple(sorted((k, _hashable(v)) for k, v in cfg.items())))
    for fs in sorted(by_rate, reverse=True):
        entries = [e for e in by_rate[fs] for _ in range(repeat_per_utt)]
        lengths = np.array([all_lengths[e.uid] for e in entries], np.int64)
        for start in range(0, len(entries), _CHUNK):
            chunk = entries[start : start + _CHUNK]
            n = len(chunk)
            # Host decisions first (they depend on what exists), in utterance order.
            use_wind = np.array([bool(wind) and wind.has_rate_at_least(fs) and rng.random() < p_wind
                                 for _ in chunk])
            use_rir = np.array([bool(rir) and rng.random() < p_reverb for _ in chunk])
            pad = _CHUNK - n
            prm = draw(
                jax.random.fold_in(jax.random.fold_in(key, fs), start),
                jnp.asarray(np.pad(lengths[start : start + n], (0, pad)), jnp.int32),
                jnp.full((_CHUNK,), fs, jnp.int32),
                jnp.asarray(np.pad(use_wind, (0, pad))),
                jnp.asarray(np.pad(use_rir, (0, pad))),
            )
            prm = jax.tree.map(np.asarray, prm)
            for i, entry in enumerate(chunk):
                count += 1
                row = jax.tree.map(lambda a, i=i: a[i], prm)
                if use_wind[i]:
                    noise_uid = wind.select(fs, rng)
                else:
                    noise_uid = noise.select(fs, rng)
                if noise_uid is None:
                    raise ValueError(
                        f"{sources_dir}: no noise left at {fs} Hz or above for {entry.uid} "
                        "(add noise files or allow reuse)"
                    )
                rir_uid = rir.select(fs, rng) if use_rir[i] else None
                if rir_uid is None:
                    row = row._replace(use_rir=np.bool_(False))
                length = int(lengths[start + i])
                chain = params_to_chain(row, sample_rate=fs, num_samples=length)
                sub = str(count // 5000)
                name = f"fileid_{count}.{out_format}"
                rows.append(
                    MetaRow(
                        id=f"fileid_{count}",
                        noisy_path=os.path.join(output_dir, "noisy", sub, name),
                        speech_uid=entry.uid,
                        speech_sid=tables.utt2spk.get(entry.uid, entry.uid),
                        clean_path=os.path.join(output_dir, "clean", sub, name),
                        noise_uid=noise_uid,
                        snr_db=float(row.snr_db),
                        rir_uid=rir_uid or "none",
                        augmentation=format_augmentation(chain),
                        fs=fs,
                        length=length,
                        text=tables.text.get(entry.uid) or "<not-available>",
                        noise_path=os.path.join(output_dir, "noise", sub, name) if store_noise else None,
                    )
                )
                bar.update(1)
    bar.close()
    return rows


# --- command line --------------------------------------------------------------------------------

def _define_flags() -> None:
    """Flags are defined only when this module is the program (importing it defines none)."""
    flags.DEFINE_string("sources", None, "Directory with the source lists.")
    flags.DEFINE_string("out", None, "Path of the meta.tsv to write.")
    flags.DEFINE_string(
        "output_dir", None, "Where the rendered audio will go (default: the directory of --out)."
    )
    flags.DEFINE_integer("seed", 0, "Random seed.")
    config_flags.DEFINE_config_file(
        "config", str(_REPO / "configs" / "simulation" / "train.py"), "Simulation config.",
        lock_config=True,
    )  # fmt: skip


def main(argv) -> None:
    del argv
    prepare_runtime()
    f = flags.FLAGS
    if not f.sources or not f.out:
        raise app.UsageError("--sources and --out are required")
    cfg = f.config
    out_dir = f.output_dir or os.path.dirname(os.path.abspath(f.out))
    rows = generate_meta(
        f.sources,
        output_dir=out_dir,
        seed=f.seed,
        sample_params=cfg.sample_params.to_dict(),
        **cfg.selection.to_dict(),
    )
    write_meta_tsv(f.out, rows)
    counts = {"wind": sum(r.noise_uid.startswith("wind_noise") for r in rows),
              "reverberant": sum(r.rir_uid != "none" for r in rows)}
    logging.info("wrote %d rows to %s (%s)", len(rows), f.out, counts)
    print(f"wrote {len(rows)} rows to {f.out}: {counts['wind']} with wind noise, "
          f"{counts['reverberant']} reverberant", file=sys.stderr)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
