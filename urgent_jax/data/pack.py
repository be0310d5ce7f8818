"""Pack scp-listed audio into ArrayRecord shards, and a Grain random-access source over them.

    python -m urgent_jax.data.pack --scp speech_sources.scp --out DIR --shards 8 \
        [--codec flac|pcm16|float32] [--labels utt2lang ...]

The scp holds `uid fs path` (Track 1 source lists, §1.1) or `uid path` lines. Utterances are
sorted by uid and dealt round-robin to `DIR/shard-<k>-of-<N>.array_record`, so the shards depend
only on the set of uids, not on the list's order. One record = one utterance (channel 0); the
record layout and its decoding live in `urgent_jax.audio.packed` (codecs: `flac` / `pcm16`, 16-bit,
lossless for 16-bit sources such as the demo corpus and most speech corpora; `float32`, lossless
for anything; with a 16-bit codec the packer warns once, with counts, when float / 24-bit sources
are rounded to 16 bit or samples outside [-1, 1) clip). Labels ({name: value} from `--labels` kv
files, e.g. utt2lang) ride in the header. A uid listed twice is an error naming the list and line.

Besides the shards the packer writes
    DIR/index.tsv      uid, shard, position, fs, num_samples (the order of `PackedSource`)
    DIR/packed.json    the summary (num_records, num_shards, codec, shard file names, ...)
    DIR/packed.scp     `uid packed:<abs DIR>#<uid>` for every utterance, in the scp's order
    DIR/<list>         for a Track 1 source list (every line `uid fs path`): the same list with
                       packed paths, named like the input when that is an official source-list
                       name (speech_sources.scp, noise_scoures.scp, ...), else speech_sources.scp.

A packed path `packed:<DIR>#<uid>` names one packed utterance (DIR absolute as written here; a
relative DIR resolves like a relative file path; uids may not contain `#`). Manifests may list
packed paths wherever they list audio files: `audio.io.audio_info` / `read_audio` / `audio_exists`
dispatch them to `urgent_jax.audio.packed`, so the dynamic-mixing and pre-simulated sources,
pre-simulation and manifest validation read packed audio unchanged. To train from a pack, swap the
source directory's speech_sources.scp (or noise list) for the one in DIR (source_length.scp,
utt2spk, ... are keyed by uid and stay valid). Packed utterances have one channel (channel 0).

`PackedSource(DIR)` implements grain.sources.RandomAccessDataSource: `len`, `source[i]` ->
{uid, fs, num_samples, audio float32 [T], labels}, plus `read(uid)`; it is picklable (each worker
opens its own readers) and can stand in for per-file reads in Grain pipelines.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from urgent_jax.audio.io import AudioFileError, read_audio
from urgent_jax.audio.packed import (
    CODECS,
    INDEX_FILE,
    META_FILE,
    decode_record,
    encode_record,
    load_index,
    packed_path,
)
from urgent_jax.data.manifest import (
    SOURCE_LIST_NAMES,
    SourceEntry,
    read_kv,
    write_kv,
    write_source_list,
    write_text_atomic,
)
from urgent_jax.data.sources import read_speech_list

__all__ = ["CODECS", "PackedSource", "decode_record", "encode_record", "pack"]

PACKED_SCP = "packed.scp"
PCM16_CODECS = ("flac", "pcm16")  # 16-bit: lossless for 16-bit sources only
log = logging.getLogger(__name__)


def pcm16_losses(audio: np.ndarray) -> tuple[bool, bool]:
    """(is_reduced, is_clipped) of float audio [T] stored as 16-bit PCM (`flac` / `pcm16`):
    samples that are not multiples of 2^-15 are rounded, samples outside [-1, 1 - 2^-15] clip."""
    scaled = np.asarray(audio, np.float64) * 32768.0
    is_clipped = bool(np.any((scaled < -32768.0) | (scaled > 32767.0)))
    return bool(np.any(scaled != np.rint(scaled))), is_clipped


def shard_name(k: int, num_shards: int) -> str:
    return f"shard-{k:05d}-of-{num_shards:05d}.array_record"


def _source_list_name(scp: str | os.PathLike) -> str:
    """The name of the packed copy of a Track 1 source list (see the module docstring)."""
    name = os.path.basename(os.fspath(scp))
    official = {n for names in SOURCE_LIST_NAMES.values() for n in names}
    return name if name in official else "speech_sources.scp"


def pack(
    scp: str | os.PathLike,
    out: str | os.PathLike,
    num_shards: int,
    *,
    codec: str = "flac",
    labels: Mapping[str, str | os.PathLike] | None = None,
) -> dict:
    """Pack every utterance of `scp` into `num_shards` ArrayRecord shards under `out`, plus
    index.tsv, packed.json, packed.scp and (for a `uid fs path` list) the packed source list.

    Relative paths in the scp are read from the current directory if they exist there, else from
    the scp's directory (as the loaders do). labels: label name -> kv file (uid value). Returns a
    summary dict: out, num_records, num_shards, codec, shards, audio_s, bytes, elapsed_s
    (packed.json holds it too). Unreadable files raise (the scp is a curated list).
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    start = time.perf_counter()
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    entries = read_speech_list(scp)  # paths resolved against the list's directory
    if not entries:
        raise ValueError(f"{scp}: empty list, nothing to pack")
    label_maps = {name: read_kv(path) for name, path in (labels or {}).items()}
    out = Path(out).absolute()
    links = {uid: packed_path(out, uid) for uid in entries}  # rejects uids packed paths cannot hold
    out.mkdir(parents=True, exist_ok=True)
    uids = sorted(entries)
    shards = [shard_name(k, num_shards) for k in range(num_shards)]
    writers = [ArrayRecordWriter(str(out / name), "group_size:1") for name in shards]
    index_rows, audio_s, total_bytes = [], 0.0, 0
    num_reduced = num_clipped = 0  # utterances the 16-bit codecs change (warned once, below)
    try:
        for i, uid in enumerate(uids):
            fs, path = entries[uid]
            try:  # the message names the list and uid too: the scp is what the user fixes
                audio, rate = read_audio(path, first_channel=True)
            except AudioFileError as e:
                raise AudioFileError(f"{scp}: uid {uid}: {e}") from None
            if fs is not None and rate != fs:
                raise ValueError(f"{scp}: uid {uid}: {path}: rate {rate} Hz, list says {fs} Hz")
            if codec in PCM16_CODECS:
                is_reduced, is_clipped = pcm16_losses(audio[0])
                num_reduced += is_reduced
                num_clipped += is_clipped
            item_labels = {name: m[uid] for name, m in label_maps.items() if uid in m}
            record = encode_record(uid, audio[0], rate, codec, item_labels)
            shard = i % num_shards
            writers[shard].write(record)
            index_rows.append((uid, shard, i // num_shards, rate, audio.shape[1]))
            audio_s += audio.shape[1] / rate
            total_bytes += len(record)
    finally:
        for w in writers:
            w.close()
    losses = ((num_reduced, ("have samples off the 16-bit grid (float or 24/32-bit sources): "
                             "codec %s stores them rounded to 16 bit")),
              (num_clipped, "have samples outside [-1, 1): codec %s clips them"))  # fmt: skip
    for count, what in losses:
        if count:
            log.warning("%s: %d of %d utterances " + what + " (--codec float32 keeps them)",
                        scp, count, len(uids), codec)  # fmt: skip
    summary = {
        "out": str(out),
        "num_records": len(uids),
        "num_shards": num_shards,
        "codec": codec,
        "shards": shards,
        "audio_s": audio_s,
        "bytes": total_bytes,
        "elapsed_s": time.perf_counter() - start,
    }
    write_text_atomic(out / META_FILE, json.dumps(summary, indent=1) + "\n")
    # index.tsv last: it marks a complete pack (and its change reloads cached indexes).
    rows = ["uid\tshard\tposition\tfs\tnum_samples"] + ["\t".join(map(str, r)) for r in index_rows]
    write_text_atomic(out / INDEX_FILE, "".join(row + "\n" for row in rows))
    write_kv(out / PACKED_SCP, links)
    if entries and all(fs is not None for fs, _ in entries.values()):
        packed_list = [SourceEntry(uid, fs, links[uid]) for uid, (fs, _) in entries.items()]
        write_source_list(out / _source_list_name(scp), packed_list)
    return summary


class PackedSource:
    """Grain random-access source over packed shards (index.tsv order: sorted uids).

    Reads go through the per-process index of `urgent_jax.audio.packed`; pickling keeps only the
    directory, so each worker process opens its own readers."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        load_index(self.directory)  # fail early on a directory without an index

    @property
    def _index(self):
        return load_index(self.directory)  # cached per process; reloaded if re-packed

    @property
    def uids(self) -> list[str]:
        return self._index.uids

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict:
        return decode_record(self._index.record(int(index)))

    def read(self, uid: str) -> dict:
        return self[self._index.row_of[uid]]

    def read_many(self, indices: Sequence[int]) -> list[dict]:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return f"PackedSource({str(self.directory)!r}, {len(self)} records)"


# --- command line ---------------------------------------------------------------------------------


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("scp", None, "uid [fs] path list to pack.")
    flags.DEFINE_string("out", None, "Output directory for the shards and index.tsv.")
    flags.DEFINE_integer("shards", 1, "Number of ArrayRecord shards (at least 1).", lower_bound=1)
    flags.DEFINE_enum("codec", "flac", list(CODECS), "Audio encoding inside records.")
    flags.DEFINE_multi_string("labels", [], "name=kv_file (uid value), repeatable.")


def main(argv) -> None:
    from absl import app, flags

    f = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not f.scp or not f.out:
        raise app.UsageError("--scp and --out are required")
    labels = dict(item.split("=", 1) for item in f.labels)
    s = pack(f.scp, f.out, f.shards, codec=f.codec, labels=labels)
    print(
        f"packed {s['num_records']} utterances ({s['audio_s'] / 3600:.3f} h, "
        f"{s['bytes'] / 1e6:.1f} MB) into {s['num_shards']} shards in {s['elapsed_s']:.1f} s "
        f"-> {s['out']}"
    )


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
