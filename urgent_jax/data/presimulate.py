"""Render a meta.tsv into a pre-simulated set with the batched jit simulator.

    python -m urgent_jax.data.presimulate --meta_tsv meta.tsv --sources DIR --out OUT \
        [--batch_size 8] [--num_workers 2] [--policy raise|skip] [--nohighpass] [--seed 0]

Drop-in for the official `simulate_data_from_param.py`, also for meta.tsv files written by the official
generator. Audio goes to the paths written in meta.tsv (noisy_path, clean_path, noise_path); OUT gets
the lists of REFERENCE.md §1.2: wav.scp, spk1.scp, utt2fs, utt2spk, spk2utt, text, utt2lang,
utt2category, speech_length.scp.

Rows are grouped by sampling rate, sorted by length and batched; each batch is padded to one of a few
lengths per rate (bounded compiles). Sources are read in Grain worker processes (channel 0, resampled
to the row's rate on the host); the noise crop / wrap offset is drawn on the host exactly as the
reference does (numpy generator seeded by the file number), everything else runs in one jitted
`simulate` call per batch. Resumable: rows whose output files already exist with the right length are
not rendered again. Bad sources raise (policy 'raise', default) or are skipped and counted ('skip').
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import logging
import os
import sys

import grain
import jax
import numpy as np
from absl import app, flags
from tqdm import tqdm

from urgent_jax import prepare_runtime
from urgent_jax.audio.io import AudioFileError, audio_info, write_audio
from urgent_jax.audio.resample import resample_numpy
from urgent_jax.data.manifest import MetaRow, SourceEntry, read_meta_tsv, read_source_dir, write_kv
from urgent_jax.data.sources import BadFileError, read_checked
from urgent_jax.simulation.mixer import Sources, simulate
from urgent_jax.simulation.params import chain_to_params, max_packets, parse_augmentation

LANGUAGE_MARKERS = (  # official utt2lang rule (REFERENCE.md §1.2): substring of the speech uid
    ("mls_french", "fra"), ("common_voice_fr", "fra"), ("mls_german", "deu"),
    ("common_voice_de", "deu"), ("mls_spanish", "spa"), ("common_voice_es", "spa"),
    ("common_voice_zh-CN", "zho"),
)  # fmt: skip


def language_of(speech_uid: str, utt2lang: dict[str, str]) -> str:
    if speech_uid in utt2lang:
        return utt2lang[speech_uid]
    for marker, lang in LANGUAGE_MARKERS:
        if marker in speech_uid:
            return lang
    return "eng"


def padded_length(n: int, step_fraction: int = 4) -> int:
    """Round n up to one of `step_fraction` lengths per octave (at least 4096)."""
    if n <= 4096:
        return 4096
    step = 1 << max(0, (n - 1).bit_length() - int(np.log2(step_fraction)))
    return -(-n // step) * step


@dataclasses.dataclass(frozen=True)
class _Entries:
    speech: dict[str, SourceEntry]
    noise: dict[str, SourceEntry]
    rir: dict[str, SourceEntry]


def _read_mono(entry: SourceEntry, sample_rate: int) -> np.ndarray:
    """Channel 0 at sample_rate, float32 (BadFileError on an unusable file). Silence is allowed: the
    simulator handles silent sources without NaN, and the reference renders them too."""
    x = read_checked(entry.path, entry.fs, allow_silent=True)
    return resample_numpy(x, entry.fs, sample_rate) if entry.fs != sample_rate else x


def _aligned_noise(noise: np.ndarray, length: int, file_number: int) -> np.ndarray:
    """Crop or wrap-pad noise to `length` with the reference's per-file offset draw (§2.3 step 5)."""
    rng = np.random.default_rng(file_number)
    n = len(noise)
    if n < length:
        offset = int(rng.integers(0, length - n))
        return np.pad(noise, (offset, length - n - offset), mode="wrap")
    if n > length:
        offset = int(rng.integers(0, n - length))
        return noise[offset : offset + length]
    return noise


def _file_number(row_id: str) -> int:
    tail = row_id.split("_")[-1]
    return int(tail) if tail.isdigit() else abs(hash(row_id)) % (2**31)


class _BatchLoader:
    """Grain transform: a list of meta rows -> padded numpy source arrays (runs in workers)."""

    def __init__(self, entries: _Entries, policy: str, batch_size: int):
        self.entries = entries
        self.policy = policy
        self.batch_size = batch_size

    def _entry(self, kind: str, uid: str, row: MetaRow) -> SourceEntry:
        table = getattr(self.entries, kind)
        if uid not in table:
            raise BadFileError(f"<{kind} uid {uid}>", "missing", f"row {row.id}: not in the {kind} lists")
        return table[uid]

    def _row(self, row: MetaRow):
        fs = row.fs
        entry = self._entry("speech", row.speech_uid, row)
        speech = _read_mono(entry, fs)
        if len(speech) != row.length:
            raise BadFileError(entry.path, "too_short" if len(speech) < row.length else "unreadable",
                               f"{len(speech)} samples at {fs} Hz, meta.tsv row {row.id} says {row.length}")
        noise = _read_mono(self._entry("noise", row.noise_uid, row), fs)
        noise = _aligned_noise(noise, row.length, _file_number(row.id))
        rir = np.zeros(0, np.float32)
        if row.rir_uid != "none":
            rir = _read_mono(self._entry("rir", row.rir_uid, row), fs)
        return speech, noise, rir

    def __call__(self, rows: list[MetaRow]) -> dict:
        """Rows -> padded arrays with exactly batch_size slots (unused slots repeat the first row and
        are not written), so that every batch of a rate and length bucket has one shape."""
        loaded, errors = [], []
        for row in rows:
            try:
                loaded.append((row, *self._row(row)))
            except BadFileError as e:
                if self.policy == "raise":
                    raise
                errors.append(f"{row.id}\t{e}")
        width = padded_length(max((r.length for r, *_ in loaded), default=1))
        rir_width = padded_length(max((len(x[3]) for x in loaded), default=1))
        n = self.batch_size if loaded else 0
        ids = [r.id for r, *_ in loaded]
        loaded = loaded + [loaded[0]] * (n - len(loaded)) if loaded else loaded
        out = {
            "speech": np.zeros((n, width), np.float32),
            "noise": np.zeros((n, width), np.float32),
            "rir": np.zeros((n, rir_width), np.float32),
            "lengths": np.zeros(n, np.int32),
            "rir_lengths": np.zeros(n, np.int32),
            "ids": ids,
            "errors": errors,
        }
        for i, (row, speech, noise, rir) in enumerate(loaded):
            out["speech"][i, : row.length] = speech
            out["noise"][i, : row.length] = noise
            out["rir"][i, : len(rir)] = rir
            out["lengths"][i] = row.length
            out["rir_lengths"][i] = len(rir)
        return out


def _check_row(row: MetaRow) -> None:
    """ValueError unless the row can be rendered: a finite SNR and an augmentation string in the
    official syntax with supported settings (checked when meta.tsv is read, so a bad line is
    reported with its file:line before anything is rendered)."""
    if not np.isfinite(row.snr_db):
        raise ValueError(f"non-finite snr_dB {row.snr_db!r}")
    chain_to_params(parse_augmentation(row.augmentation), snr_db=row.snr_db,
                    use_rir=row.rir_uid != "none", sample_rate=row.fs,
                    max_num_samples=max(row.length, 1))


def _is_done(row: MetaRow) -> bool:
    outputs = [row.noisy_path, row.clean_path] + ([row.noise_path] if row.noise_path else [])
    for path in outputs:
        try:
            if audio_info(path)[1] != row.length:
                return False
        except AudioFileError:
            return False
    return True


def _batches(rows: list[MetaRow], batch_size: int) -> list[list[MetaRow]]:
    by_rate = collections.defaultdict(list)
    for row in rows:
        by_rate[row.fs].append(row)
    batches = []
    for fs in sorted(by_rate, reverse=True):
        group = sorted(by_rate[fs], key=lambda r: r.length)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


@functools.lru_cache(maxsize=None)
def _simulate_fn(sample_rate: int, use_highpass: bool, amix_gain: float, num_aug_slots: int):
    return jax.jit(
        lambda key, src, prm: simulate(key, src, prm, sample_rate, use_highpass=use_highpass,
                                       amix_gain=amix_gain, num_aug_slots=num_aug_slots)
    )


def write_lists(rows: list[MetaRow], out_dir: str, utt2lang: dict[str, str]) -> None:
    """The Kaldi-style lists of a simulated set (REFERENCE.md §1.2) for `rows`."""
    def kv(name, fn):
        write_kv(os.path.join(out_dir, name), {r.id: fn(r) for r in rows})

    kv("wav.scp", lambda r: r.noisy_path)
    kv("spk1.scp", lambda r: r.clean_path)
    if rows and rows[0].noise_path:
        kv("noise1.scp", lambda r: r.noise_path)
    kv("utt2fs", lambda r: r.fs)
    kv("utt2spk", lambda r: r.speech_sid)
    kv("text", lambda r: r.text)
    kv("utt2lang", lambda r: language_of(r.speech_uid, utt2lang))
    kv("utt2category", lambda r: f"1ch_{r.fs}Hz")
    kv("speech_length.scp", lambda r: r.length)
    spk2utt = collections.defaultdict(list)
    for r in rows:
        spk2utt[r.speech_sid].append(r.id)
    write_kv(os.path.join(out_dir, "spk2utt"), {k: " ".join(v) for k, v in spk2utt.items()})


def presimulate(
    meta_tsv: str,
    sources_dir: str,
    out_dir: str,
    *,
    batch_size: int = 8,
    num_workers: int = 2,
    policy: str = "raise",
    use_highpass: bool = True,
    amix_gain: float = 1.0,
    seed: int = 0,
    use_progress_bar: bool = True,
) -> dict:
    """Render every row of meta_tsv (see the module docstring). Returns a summary dict."""
    if policy not in ("raise", "skip"):
        raise ValueError(f"policy must be 'raise' or 'skip', got {policy!r}")
    rows = read_meta_tsv(meta_tsv, check_row=_check_row)  # fails before rendering anything
    tables = read_source_dir(sources_dir)
    entries = _Entries(
        speech={e.uid: e for e in tables.speech},
        noise={e.uid: e for e in tables.noise + tables.wind_noise},
        rir={e.uid: e for e in tables.rir},
    )
    todo = [r for r in rows if not _is_done(r)]
    # Official chains have at most 3 augmentations; render a 4th position only when a row needs it.
    num_aug_slots = 3 + any(r.augmentation.count("/") >= 3 + r.augmentation.startswith("wind")
                            for r in todo)
    summary = {"rows": len(rows), "already_done": len(rows) - len(todo), "rendered": 0, "skipped": 0,
               "skip_reasons": [], "compiled_shapes": 0}
    batches = _batches(todo, batch_size)
    loader = _BatchLoader(entries, policy, batch_size)
    dataset = grain.MapDataset.source(batches).map(loader).to_iter_dataset()
    # Worker processes pay seconds of start-up (a fresh interpreter importing jax each): only worth it
    # for sets of more than a few dozen batches.
    if num_workers > 0 and len(batches) >= 8 * num_workers:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS(sys.argv[:1])
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    key = jax.random.PRNGKey(seed)
    shapes = set()
    by_id = {r.id: r for r in todo}
    writer = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    pending = []
    bar = tqdm(total=len(todo), desc="presimulate", unit="utt", disable=not use_progress_bar)
    iterator = iter(dataset)
    try:
        for batch in iterator:
            summary["skipped"] += len(batch["errors"])
            for err in batch["errors"]:
                logging.warning("skipped %s", err)
            summary["skip_reasons"] += list(batch["errors"])
            ids = list(batch["ids"])
            if not ids:
                bar.update(len(batch["errors"]))
                continue
            meta = [by_id[i] for i in ids]
            fs = meta[0].fs
            width = batch["speech"].shape[1]
            params = [
                chain_to_params(parse_augmentation(r.augmentation), snr_db=r.snr_db,
                                use_rir=r.rir_uid != "none", sample_rate=fs, max_num_samples=width)
                for r in meta
            ]
            params += [params[0]] * (batch_size - len(params))
            params = jax.tree.map(lambda *a: np.stack(a), *params)
            sources = Sources(batch["speech"], batch["lengths"], batch["noise"], batch["lengths"],
                              batch["rir"], batch["rir_lengths"])
            shape = (fs, width, batch["rir"].shape[1])
            if shape not in shapes:
                shapes.add(shape)
                logging.info("compiling simulate for batch shape %s (%d so far)", shape, len(shapes))
            fn = _simulate_fn(fs, use_highpass, amix_gain, num_aug_slots)
            mix = jax.device_get(fn(jax.random.fold_in(key, _file_number(ids[0])), sources, params))
            for i, row in enumerate(meta):
                n = row.length
                jobs = [(row.clean_path, mix.target[i, :n]), (row.noisy_path, mix.noisy[i, :n])]
                if row.noise_path:
                    jobs.append((row.noise_path, mix.noise[i, :n]))
                for path, audio in jobs:
                    pending.append(writer.submit(write_audio, path, audio, fs))
            summary["rendered"] += len(ids)
            bar.update(len(ids) + len(batch["errors"]))
            # Bound memory: wait for old writes once many are queued.
            if len(pending) > 256:
                for f in pending:
                    f.result()
                pending = []
        for f in pending:
            f.result()
    finally:
        bar.close()
        writer.shutdown(wait=True)
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    summary["compiled_shapes"] = len(shapes)
    skipped_ids = {e.split("\t", 1)[0] for e in summary["skip_reasons"]}
    os.makedirs(out_dir, exist_ok=True)
    write_lists([r for r in rows if r.id not in skipped_ids], out_dir, tables.utt2lang)
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        f"rows in meta.tsv: {summary['rows']}",
        f"rendered now: {summary['rendered']}, already done: {summary['already_done']}, "
        f"skipped: {summary['skipped']}, compiled batch shapes: {summary['compiled_shapes']}",
    ]
    lines += [f"  skipped {e}" for e in summary["skip_reasons"][:20]]
    if len(summary["skip_reasons"]) > 20:
        lines.append(f"  ... and {len(summary['skip_reasons']) - 20} more")
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------

def _define_flags() -> None:
    """Flags are defined only when this module is the program (importing it defines none)."""
    flags.DEFINE_string("meta_tsv", None, "meta.tsv to render.")
    flags.DEFINE_string("sources", None, "Directory with the source lists.")
    flags.DEFINE_string("out", None, "Directory for the lists (wav.scp, spk1.scp, ...).")
    flags.DEFINE_integer("batch_size", 8, "Utterances per simulator call.")
    flags.DEFINE_integer("num_workers", 2, "Grain worker processes reading sources.")
    flags.DEFINE_enum("policy", "raise", ["raise", "skip"], "What to do with bad sources.")
    flags.DEFINE_bool("highpass", True, "70 Hz high-pass on source speech (official sets: on).")
    flags.DEFINE_float("amix_gain", 1.0, "Wind mix gain (0.5 = the official ffmpeg amix halving).")
    flags.DEFINE_integer("seed", 0, "Seed of the device-side random draws.")


def main(argv) -> None:
    del argv
    prepare_runtime()
    f = flags.FLAGS
    for name in ("meta_tsv", "sources", "out"):
        if not f[name].value:
            raise app.UsageError(f"--{name} is required")
    summary = presimulate(
        f.meta_tsv, f.sources, f.out, batch_size=f.batch_size, num_workers=f.num_workers,
        policy=f.policy, use_highpass=f.highpass, amix_gain=f.amix_gain, seed=f.seed,
    )  # fmt: skip
    print(format_summary(summary))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
