"""Read side of packed audio: utterances stored as records of ArrayRecord shards.

`python -m urgent_jax.data.pack` (the writer) turns an scp of audio files into a pack directory:

    DIR/shard-<k>-of-<N>.array_record   the records (one utterance, channel 0, per record)
    DIR/index.tsv                       uid, shard, position, fs, num_samples (sorted uids)
    DIR/packed.json                     num_shards, codec, shard file names
    DIR/packed.scp                      `uid packed:<abs DIR>#<uid>`

A *packed path* names one utterance of a pack directory wherever a manifest expects an audio path:

    packed:<DIR>#<uid>        e.g. packed:/data/packs/speech_train#fileid_1234

DIR is the pack directory (absolute as written by the packer; a relative DIR is resolved like a
relative file path). The uid is everything after the last `#`, so uids may not contain `#`.
`urgent_jax.audio.io.audio_info` / `read_audio` dispatch packed paths here and `audio_exists` is
the existence check for both kinds, so every loader that reads through them (data.sources: the
pre-simulated and dynamic-mixing sources, pre-simulation; data.manifest's check_files) accepts
them in its manifests. A loader that tests `os.path.exists` itself (sqa/data.py at the time of
writing) must use `audio_exists` instead to accept them.

Record layout (one record = one utterance):

    4-byte little-endian header length | JSON header | audio bytes

header: uid, fs (Hz), num_samples, codec (`flac` / `pcm16`: soundfile-encoded 16-bit FLAC / WAV
bytes; `float32`: raw little-endian float32 samples) and labels ({name: value}). Header info
(`packed_info`) comes from index.tsv without touching the shards; `read_packed` decodes only the
requested segment where the codec allows it (float32, pcm16 and flac seek).

The index of a directory is loaded once per process and cached (reloaded when index.tsv changes);
shard readers are opened lazily, shared by threads, and reopened in a forked child. Nothing here
is pickled: a pickled object holding packed paths re-finds the index in its own process.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import soundfile as sf

PREFIX = "packed:"
CODECS = ("flac", "pcm16", "float32")
INDEX_FILE = "index.tsv"
META_FILE = "packed.json"
_HEADER_SIZE = struct.Struct("<I")


class PackedAudioError(Exception):
    """A packed path that cannot be resolved or decoded; the message starts with the path."""


# --- paths ----------------------------------------------------------------------------------------


def is_packed(path: str | os.PathLike) -> bool:
    """Whether `path` is a packed path (`packed:<DIR>#<uid>`)."""
    return isinstance(path, str) and path.startswith(PREFIX)


def packed_path(directory: str | os.PathLike, uid: str) -> str:
    """`packed:<abs DIR>#<uid>`."""
    if "#" in uid or not uid or uid != "".join(uid.split()):
        raise ValueError(f"uid {uid!r} cannot be packed (empty, whitespace or '#')")
    return f"{PREFIX}{os.path.abspath(os.fspath(directory))}#{uid}"


def split_packed(path: str) -> tuple[str, str]:
    """(DIR, uid) of a packed path; PackedAudioError when malformed."""
    if not is_packed(path):
        raise PackedAudioError(f"{path}: not a packed path ({PREFIX}<DIR>#<uid>)")
    directory, sep, uid = path[len(PREFIX) :].rpartition("#")
    if not sep or not directory or not uid:
        raise PackedAudioError(f"{path}: malformed packed path (expected {PREFIX}<DIR>#<uid>)")
    return directory, uid


def resolve_packed(path: str, base_dir: str | os.PathLike) -> str:
    """A packed path whose DIR is relative, with DIR joined onto base_dir (others unchanged)."""
    directory, uid = split_packed(path)
    if os.path.isabs(directory):
        return path
    return f"{PREFIX}{os.path.join(os.fspath(base_dir), directory)}#{uid}"


# --- records --------------------------------------------------------------------------------------


def encode_record(
    uid: str, audio: np.ndarray, fs: int, codec: str = "flac", labels: Mapping | None = None
) -> bytes:
    """One record from float audio [T] (see the module docstring for the layout)."""
    audio = np.asarray(audio, np.float32).reshape(-1)
    if codec == "float32":
        payload = audio.astype("<f4").tobytes()
    elif codec in ("flac", "pcm16"):
        buf = io.BytesIO()
        fmt = "FLAC" if codec == "flac" else "WAV"
        sf.write(buf, audio, int(fs), format=fmt, subtype="PCM_16")
        payload = buf.getvalue()
    else:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    header = {
        "uid": uid,
        "fs": int(fs),
        "num_samples": int(audio.size),
        "codec": codec,
        "labels": dict(labels or {}),
    }
    head = json.dumps(header).encode("utf-8")
    return _HEADER_SIZE.pack(len(head)) + head + payload


def _split_record(record: bytes) -> tuple[dict, memoryview]:
    (size,) = _HEADER_SIZE.unpack_from(record)
    header = json.loads(bytes(record[4 : 4 + size]).decode("utf-8"))
    return header, memoryview(record)[4 + size :]


def _window(n: int, start: int, num_samples: int | None) -> tuple[int, int]:
    """[begin, end) of a read of num_samples (None or < 0: to the end) from start (< 0: from the
    end), clipped to [0, n] as soundfile does."""
    start = int(start)
    begin = max(0, n + start) if start < 0 else min(start, n)
    end = n if num_samples is None or num_samples < 0 else min(n, begin + int(num_samples))
    return begin, end


def _decode_payload(
    header: dict, payload: memoryview, start: int = 0, num_samples: int | None = None
) -> np.ndarray:
    """float32 [T] samples [start, start + num_samples) of a record's audio."""
    begin, end = _window(int(header["num_samples"]), start, num_samples)
    codec = header["codec"]
    if codec == "float32":
        return np.frombuffer(payload, "<f4")[begin:end].astype(np.float32)
    if codec in ("flac", "pcm16"):
        audio, _ = sf.read(io.BytesIO(payload), start=begin, frames=end - begin, dtype="float32")
        return audio.reshape(-1) if audio.ndim == 1 else audio[:, 0]
    raise ValueError(f"unknown codec {codec!r} (known: {CODECS})")


def decode_record(record: bytes, start: int = 0, num_samples: int | None = None) -> dict:
    """Record bytes -> {uid, fs, num_samples, audio float32 [T], labels} (audio: the segment
    start / num_samples when given; num_samples stays the utterance's length)."""
    header, payload = _split_record(record)
    header["audio"] = _decode_payload(header, payload, start, num_samples)
    header.pop("codec")
    return header


# --- index ----------------------------------------------------------------------------------------


class PackedIndex:
    """index.tsv of one pack directory (uid -> shard, position, fs, num_samples) and its shard
    readers (opened lazily, one per shard, shared by threads, reopened after a fork)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        uids, rows = [], []
        with open(index_path, encoding="utf-8") as f:
            head = f.readline().rstrip("\n").split("\t")
            if head[:5] != ["uid", "shard", "position", "fs", "num_samples"]:
                raise ValueError(f"{index_path}: not a pack index (header {head})")
            for line in f:
                uid, *fields = line.rstrip("\n").split("\t")
                uids.append(uid)
                rows.append(tuple(int(v) for v in fields[:4]))
        self.uids: list[str] = uids
        table = np.asarray(rows, np.int64).reshape(-1, 4)
        self.shard, self.position, self.fs, self.num_samples = (table[:, k] for k in range(4))
        self.row_of = {uid: i for i, uid in enumerate(uids)}
        self.shard_files = self._shard_files(1 + int(self.shard.max(initial=-1)))
        self._readers: list | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def _shard_files(self, min_shards: int) -> list[str]:
        meta = self.directory / META_FILE
        if meta.is_file():
            with open(meta, encoding="utf-8") as f:
                names = json.load(f)["shards"]
        else:  # a pack without packed.json: the shard files of the directory, in name order
            names = sorted(p.name for p in self.directory.glob("shard-*.array_record"))
        if len(names) < min_shards:
            raise ValueError(f"{self.directory}: index names shard {min_shards - 1}, "
                             f"only {len(names)} shard files")  # fmt: skip
        return [str(self.directory / name) for name in names]

    def __len__(self) -> int:
        return len(self.uids)

    def __contains__(self, uid: str) -> bool:
        return uid in self.row_of

    def __getstate__(self):
        raise TypeError("PackedIndex is per process; pickle the directory and call load_index")

    def reader(self, shard: int):
        """The shard's ArrayRecordReader (opened in this process on first use)."""
        readers = self._readers
        if readers is None or self._pid != os.getpid():
            with self._lock:
                if self._readers is None or self._pid != os.getpid():
                    # After a fork the parent's readers (and their threads) are not usable here;
                    # they are dropped without closing (closing could touch the parent's state).
                    if self._readers is not None:
                        _ABANDONED.append(self._readers)
                    self._readers = [None] * len(self.shard_files)
                    self._pid = os.getpid()
                readers = self._readers
        if readers[shard] is None:
            from array_record.python.array_record_module import ArrayRecordReader

            with self._lock:
                if readers[shard] is None:
                    readers[shard] = ArrayRecordReader(
                        self.shard_files[shard], "readahead_buffer_size:0"
                    )
        return readers[shard]

    def record(self, row: int) -> bytes:
        """Raw record bytes of index row `row`."""
        return self.reader(int(self.shard[row])).read([int(self.position[row])])[0]


_CACHE: dict[str, tuple[tuple, PackedIndex]] = {}
_CACHE_LOCK = threading.Lock()
_ABANDONED: list = []  # readers inherited through fork, kept alive so they are never destroyed


def _after_fork_in_child() -> None:
    """Locks held by another thread at fork time would stay locked forever in the child."""
    global _CACHE_LOCK
    _CACHE_LOCK = threading.Lock()
    for _, index in _CACHE.values():
        index._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def load_index(directory: str | os.PathLike) -> PackedIndex:
    """The cached index of a pack directory (loaded again when its index.tsv changed).
    FileNotFoundError when the directory has no index.tsv."""
    key = os.path.abspath(os.fspath(directory))
    st = os.stat(os.path.join(key, INDEX_FILE))  # FileNotFoundError for a missing directory
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _CACHE.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None or cached[0] != stamp:
            cached = (stamp, PackedIndex(key))
            _CACHE[key] = cached
    return cached[1]


def _locate(path: str) -> tuple[PackedIndex, int]:
    directory, uid = split_packed(path)
    try:
        index = load_index(directory)
    except FileNotFoundError:
        reason = f"no pack directory {directory} ({INDEX_FILE} not found)"
        raise PackedAudioError(f"{path}: {reason}") from None
    except (OSError, ValueError) as e:
        raise PackedAudioError(f"{path}: cannot read the pack index ({e})") from e
    row = index.row_of.get(uid)
    if row is None:
        raise PackedAudioError(f"{path}: no uid {uid!r} in pack {directory}")
    return index, row


# --- public reads ---------------------------------------------------------------------------------


def packed_exists(path: str) -> bool:
    """Whether a packed path names an utterance of an existing pack directory."""
    try:
        _locate(path)
    except PackedAudioError:
        return False
    return True


def packed_info(path: str) -> tuple[int, int, int]:
    """(sample_rate, num_samples, num_channels = 1) from the index, without reading the shards."""
    index, row = _locate(path)
    return int(index.fs[row]), int(index.num_samples[row]), 1


def read_packed(
    path: str, start: int = 0, num_samples: int | None = None
) -> tuple[np.ndarray, int]:
    """(float32 [1, time], sample_rate) of a packed utterance, samples [start, start +
    num_samples) at its own rate (num_samples None: to the end). PackedAudioError naming the path
    for a missing directory or uid, or an undecodable record."""
    index, row = _locate(path)
    try:
        header, payload = _split_record(index.record(row))
        if header["uid"] != index.uids[row]:
            raise ValueError(f"record holds uid {header['uid']!r}, index says {index.uids[row]!r}")
        audio = _decode_payload(header, payload, start, num_samples)
    except PackedAudioError:
        raise
    except Exception as e:  # array_record, json, soundfile: one error type naming the path
        raise PackedAudioError(f"{path}: cannot decode packed audio ({e})") from e
    return np.ascontiguousarray(audio[None, :]), int(header["fs"])
