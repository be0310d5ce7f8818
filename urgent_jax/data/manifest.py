"""Every URGENT text format (REFERENCE.md §1), read with validation and written in canonical form.

Manifests are the contract between layers: nothing else parses these files. Formats:

- source lists `uid fs path` (speech/noise/wind-noise/RIR; a path may be a packed utterance
  `packed:<DIR>#<uid>`, see `urgent_jax.audio.packed`): `read_source_list`, `write_source_list`,
  `find_source_list` (accepts the official misspelling `*_scoures.scp`);
- key-value files `uid value` (text, utt2spk, utt2fs, wav.scp, spk1.scp, inf.scp, lengths, ...):
  `read_kv`, `read_int_kv`, `read_float_kv`, `read_utt2fs`, `write_kv`; id lists: `read_id_list`,
  `write_id_list`;
- `meta.tsv` of the simulated sets: `read_meta_tsv`, `write_meta_tsv` (`MetaRow`);
- Track 2 `data.jsonl`: `read_jsonl`, `write_jsonl` (`QualityRecord`);
- evaluation outputs: `<METRIC>.scp` (`read_scores`, `write_scores`), `RESULTS.txt`
  (`nanmean_scores`, `results_lines`, `write_results`, `read_results`).

Every problem raises `ManifestError` as `"<file>:<line>: <reason>"` (1-based physical line numbers;
blank and whitespace-only lines are skipped but counted). Writers create parent directories and
write exactly the text the readers accept, so canonical files survive read -> write byte for byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from urgent_jax.audio.io import audio_exists
from urgent_jax.audio.packed import PackedAudioError, is_packed, resolve_packed
from urgent_jax.audio.resample import SAMPLE_RATES

PathLike = str | os.PathLike

# Names looked for by `find_source_list`, official (misspelt) name first.
SOURCE_LIST_NAMES: dict[str, tuple[str, ...]] = {
    "speech": ("speech_sources.scp",),
    "noise": ("noise_scoures.scp", "noise_sources.scp"),
    "wind_noise": ("wind_noise_scoures.scp", "wind_noise_sources.scp"),
    "rir": ("rirs.scp",),
}

# fmt: off
META_COLUMNS: tuple[str, ...] = (
    "id", "noisy_path", "speech_uid", "speech_sid", "clean_path", "noise_uid", "noise_path",
    "snr_dB", "rir_uid", "augmentation", "fs", "length", "text",
)
# fmt: on
META_COLUMNS_NO_NOISE: tuple[str, ...] = tuple(c for c in META_COLUMNS if c != "noise_path")

JSONL_KEYS: tuple[str, ...] = ("audio_path", "system_id", "sample_id", "duration", "metrics")

_INT_RE = re.compile(r"[+-]?[0-9]+")  # int() alone would also accept "1_000" and " 12"


class ManifestError(ValueError):
    """A manifest that cannot be read or written; the message starts with `file:line:`."""


def _error(path: PathLike, line_no: int | None, reason: str) -> ManifestError:
    where = f"{os.fspath(path)}:{line_no}" if line_no is not None else os.fspath(path)
    return ManifestError(f"{where}: {reason}")


# --- parsing helpers ---


def _lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) for every non-blank line of a text file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise _error(path, None, "manifest file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _error(path, None, f"cannot read ({e})") from e
    for i, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield i, line


def _parse_int(value: str, what: str, path: PathLike, line_no: int) -> int:
    if not _INT_RE.fullmatch(value):
        raise _error(path, line_no, f"non-integer {what}: {value!r}")
    return int(value)


def _parse_float(value: str, what: str, path: PathLike, line_no: int) -> float:
    try:
        if "_" in value:  # float() accepts "1_0"; the format does not
            raise ValueError
        return float(value)
    except ValueError:
        raise _error(path, line_no, f"non-numeric {what}: {value!r}") from None


def _parse_rate(value: str, rates: Sequence[int], path: PathLike, line_no: int) -> int:
    fs = _parse_int(value, "sampling rate", path, line_no)
    if fs not in rates:
        raise _error(path, line_no, f"unsupported sampling rate {fs} (allowed: {tuple(rates)})")
    return fs


def _resolve(file_path: str, manifest: PathLike, resolve_relative: bool) -> str:
    """A packed path (`packed:<DIR>#<uid>`, see `urgent_jax.audio.packed`) resolves its DIR."""
    base = os.path.dirname(os.fspath(manifest))
    if resolve_relative and is_packed(file_path):
        try:
            return resolve_packed(file_path, base)
        except PackedAudioError:
            return file_path  # malformed: check_files reports it
    if resolve_relative and not os.path.isabs(file_path):
        return os.path.join(base, file_path)
    return file_path


def _check_exists(file_path: str, path: PathLike, line_no: int) -> None:
    """A file, or a packed utterance whose pack directory lists its uid."""
    if not audio_exists(file_path):
        what = "packed utterance (no such pack or uid)" if is_packed(file_path) else "file"
        raise _error(path, line_no, f"missing {what} {file_path!r}")


class _UniqueIds:
    """Remembers the line of each id so duplicates name both lines."""

    def __init__(self, path: PathLike, what: str = "id"):
        self.path, self.what, self.seen = path, what, {}

    def add(self, uid: str, line_no: int) -> None:
        if uid in self.seen:
            reason = f"duplicate {self.what} {uid!r} (first on line {self.seen[uid]})"
            raise _error(self.path, line_no, reason)
        self.seen[uid] = line_no


def _check_nonempty(num_records: int, path: PathLike, allow_empty: bool, line_no: int = 1) -> None:
    """`line_no` is where the first record was expected."""
    if num_records == 0 and not allow_empty:
        raise _error(path, line_no, "empty manifest (no records)")


def _records(
    path: PathLike, columns: str, allow_empty: bool, what: str = "id"
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a whitespace-separated file with the given column names, checking
    the column count, unique first column and, once exhausted, that there was a record."""
    num_columns, ids = len(columns.split()), _UniqueIds(path, what)
    for line_no, line in _lines(path):
        fields = line.split()
        if len(fields) != num_columns:
            raise _error(
                path, line_no, f"expected {num_columns} columns ({columns}), got {len(fields)}"
            )
        ids.add(fields[0], line_no)
        yield line_no, fields
    _check_nonempty(len(ids.seen), path, allow_empty)


def _write_lines(path: PathLike, lines: Iterable[str]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write `text` through a temporary file unique to this process and thread, then rename it
    over `path`: readers and concurrent writers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_field(value: str, what: str, path: PathLike, line_no: int, *, is_key: bool) -> None:
    """Writers refuse fields the readers would split differently."""
    if is_key and (not value or value != "".join(value.split())):
        raise _error(path, line_no, f"{what} {value!r} is empty or contains whitespace")
    if "\n" in value or "\r" in value:
        raise _error(path, line_no, f"{what} {value!r} contains a line break")


# --- source lists: `uid fs path` ---


@dataclasses.dataclass(frozen=True)
class SourceEntry:
    """One line of a source list: a speech/noise/RIR file and its (estimated-bandwidth) rate."""

    uid: str
    fs: int  # Hz, one of the supported sampling rates
    path: str  # as written, or joined to the list's directory when resolved


def read_source_list(
    path: PathLike,
    *,
    resolve_relative: bool = False,
    check_files: bool = False,
    sample_rates: Sequence[int] = SAMPLE_RATES,
    allow_empty: bool = False,
) -> list[SourceEntry]:
    """Read `uid fs path` lines in file order. `resolve_relative` joins relative paths to the list's
    directory; `check_files` requires each (resolved) path to exist."""
    entries = []
    for line_no, (uid, fs_text, file_path) in _records(path, "uid fs path", allow_empty, "uid"):
        fs = _parse_rate(fs_text, sample_rates, path, line_no)
        file_path = _resolve(file_path, path, resolve_relative)
        if check_files:
            _check_exists(file_path, path, line_no)
        entries.append(SourceEntry(uid, fs, file_path))
    return entries


def write_source_list(path: PathLike, entries: Iterable[SourceEntry]) -> None:
    """Write `uid fs path` lines in the given order."""
    lines, ids = [], _UniqueIds(path, "uid")
    for line_no, e in enumerate(entries, start=1):
        _check_field(e.uid, "uid", path, line_no, is_key=True)
        _check_field(e.path, "path", path, line_no, is_key=True)
        ids.add(e.uid, line_no)
        lines.append(f"{e.uid} {int(e.fs)} {e.path}")
    _write_lines(path, lines)


def find_source_list(directory: PathLike, kind: str) -> Path:
    """The source list of `kind` ('speech', 'noise', 'wind_noise', 'rir') in `directory`, accepting
    the official misspelt name (`noise_scoures.scp`) and the correct one; the official one wins."""
    if kind not in SOURCE_LIST_NAMES:
        raise ManifestError(f"unknown source kind {kind!r} (known: {tuple(SOURCE_LIST_NAMES)})")
    candidates = [Path(directory) / name for name in SOURCE_LIST_NAMES[kind]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ManifestError(f"{os.fspath(directory)}: no {kind} source list (looked for {looked})")


@dataclasses.dataclass(frozen=True)
class SourceTables:
    """Everything a Track 1 source directory holds (train_sources/ or a validation folder).

    Optional files that are absent give empty containers; `lengths` holds source_length.scp values
    (samples at each file's own rate) when present.
    """

    speech: list[SourceEntry]
    noise: list[SourceEntry]
    wind_noise: list[SourceEntry]
    rir: list[SourceEntry]
    utt2spk: dict[str, str]
    text: dict[str, str]
    utt2lang: dict[str, str]
    lengths: dict[str, int]


def read_source_dir(directory: PathLike, *, check_files: bool = False) -> SourceTables:
    """Read a source directory: the speech list is required; noise, wind-noise and RIR lists,
    utt2spk, text, utt2lang and source_length.scp are read when present."""
    directory = Path(directory)

    def optional_list(kind: str) -> list[SourceEntry]:
        try:
            path = find_source_list(directory, kind)
        except ManifestError:
            return []
        return read_source_list(path, check_files=check_files, allow_empty=True)

    def optional_kv(name: str, reader=None) -> dict:
        path = directory / name
        if not path.is_file():
            return {}
        if reader is not None:
            return reader(path, allow_empty=True)
        return read_kv(path, allow_empty=True, allow_empty_value=True)

    return SourceTables(
        speech=read_source_list(find_source_list(directory, "speech"), check_files=check_files),
        noise=optional_list("noise"),
        wind_noise=optional_list("wind_noise"),
        rir=optional_list("rir"),
        utt2spk=optional_kv("utt2spk"),
        text=optional_kv("text"),
        utt2lang=optional_kv("utt2lang"),
        lengths=optional_kv("source_length.scp", read_int_kv),
    )


# --- key-value files: `uid value` (value = rest of the line) ---


def read_kv(
    path: PathLike,
    *,
    allow_empty: bool = False,
    allow_empty_value: bool = False,
    check_files: bool = False,
    resolve_relative: bool = False,
) -> dict[str, str]:
    """Read `uid value` lines into an ordered dict; the value is the rest of the line with outer
    whitespace removed (transcripts keep inner spaces). A line with only a uid is an error unless
    `allow_empty_value`. For path lists (wav.scp, spk1.scp, inf.scp) `resolve_relative` and
    `check_files` behave as in `read_source_list`."""
    out: dict[str, str] = {}
    ids = _UniqueIds(path)
    for line_no, line in _lines(path):
        fields = line.strip().split(maxsplit=1)
        if len(fields) == 1 and not allow_empty_value:
            raise _error(path, line_no, "expected 2 columns (uid value), got 1")
        uid, value = fields[0], (fields[1] if len(fields) == 2 else "")
        ids.add(uid, line_no)
        if resolve_relative or check_files:
            value = _resolve(value, path, resolve_relative)
        if check_files:
            _check_exists(value, path, line_no)
        out[uid] = value
    _check_nonempty(len(out), path, allow_empty)
    return out


def read_int_kv(path: PathLike, *, allow_empty: bool = False) -> dict[str, int]:
    """`uid <int>` files: source_length.scp, speech_length.scp (samples)."""
    return {
        uid: _parse_int(value, "value", path, line_no)
        for line_no, (uid, value) in _records(path, "uid int", allow_empty)
    }


def read_float_kv(path: PathLike, *, allow_empty: bool = False) -> dict[str, float]:
    """`uid <float>` files: per-utterance metric scores (`nan` allowed), utt2dur (seconds)."""
    return {
        uid: _parse_float(value, "value", path, line_no)
        for line_no, (uid, value) in _records(path, "uid float", allow_empty)
    }


def read_utt2fs(
    path: PathLike, *, sample_rates: Sequence[int] = SAMPLE_RATES, allow_empty: bool = False
) -> dict[str, int]:
    """`uid fs` with fs (Hz) checked against the supported sampling rates."""
    return {
        uid: _parse_rate(value, sample_rates, path, line_no)
        for line_no, (uid, value) in _records(path, "uid fs", allow_empty)
    }


def write_kv(path: PathLike, mapping: Mapping[str, object]) -> None:
    """Write `uid value` lines in mapping order (`str(value)`, so floats use their repr); an empty
    value writes the uid alone."""
    lines = []
    for line_no, (uid, value) in enumerate(mapping.items(), start=1):
        text = str(value).strip()
        _check_field(uid, "uid", path, line_no, is_key=True)
        _check_field(text, "value", path, line_no, is_key=False)
        lines.append(f"{uid} {text}" if text else uid)
    _write_lines(path, lines)


def read_id_list(path: PathLike, *, allow_empty: bool = False) -> list[str]:
    """One id per line (e.g. `meta/validation_selected`), in file order."""
    return [uid for _, (uid,) in _records(path, "id", allow_empty)]


def write_id_list(path: PathLike, ids: Iterable[str]) -> None:
    """One id per line, in the given order."""
    ids = list(ids)
    for line_no, uid in enumerate(ids, start=1):
        _check_field(uid, "id", path, line_no, is_key=True)
    _write_lines(path, ids)


# --- meta.tsv ---


@dataclasses.dataclass(frozen=True)
class MetaRow:
    """One row of meta.tsv. `noise_uid`/`rir_uid` keep the literal 'none'; `augmentation` is the raw
    official string (parsed in `simulation.params`); `noise_path` is None when the file has no such
    column. Field `snr_db` is the column `snr_dB`."""

    id: str
    noisy_path: str
    speech_uid: str
    speech_sid: str
    clean_path: str
    noise_uid: str
    snr_db: float  # dB
    rir_uid: str
    augmentation: str
    fs: int  # Hz
    length: int  # speech length, samples
    text: str
    noise_path: str | None = None


def read_meta_tsv(
    path: PathLike,
    *,
    check_files: bool = False,
    sample_rates: Sequence[int] = SAMPLE_RATES,
    allow_empty: bool = False,
    check_row: Callable[[MetaRow], object] | None = None,
) -> list[MetaRow]:
    """Read meta.tsv with or without the `noise_path` column (decided by the header).
    `check_files` requires noisy, clean (and noise) paths to exist as written. `check_row(row)`
    validates what this module does not parse (e.g. the `augmentation` syntax); a ValueError it
    raises becomes a ManifestError naming the row's line."""
    rows, ids, columns, header_line_no = [], _UniqueIds(path), None, 0
    for line_no, line in _lines(path):
        fields = line.split("\t")
        if columns is None:
            if tuple(fields) in (META_COLUMNS, META_COLUMNS_NO_NOISE):
                columns, header_line_no = tuple(fields), line_no
                continue
            expected = f"expected {list(META_COLUMNS)}, noise_path optional"
            if fields[0] != "id":
                raise _error(path, line_no, f"missing header ({expected})")
            raise _error(path, line_no, f"wrong header {fields} ({expected})")
        if len(fields) != len(columns):
            raise _error(path, line_no, f"expected {len(columns)} columns, got {len(fields)}")
        raw: dict = dict(zip(columns, fields))
        ids.add(raw["id"], line_no)
        raw.update(
            snr_db=_parse_float(raw.pop("snr_dB"), "snr_dB", path, line_no),
            fs=_parse_rate(raw["fs"], sample_rates, path, line_no),
            length=_parse_int(raw["length"], "length", path, line_no),
        )
        row = MetaRow(**raw)
        if check_row is not None:
            try:
                check_row(row)
            except ValueError as e:
                raise _error(path, line_no, f"row {row.id}: {e}") from None
        if check_files:
            for file_path in (row.noisy_path, row.clean_path, row.noise_path):
                if file_path is not None:
                    _check_exists(file_path, path, line_no)
        rows.append(row)
    if columns is None and not allow_empty:
        raise _error(path, 1, "empty manifest (no header, no records)")
    _check_nonempty(len(rows), path, allow_empty, header_line_no + 1)
    return rows


def write_meta_tsv(
    path: PathLike, rows: Iterable[MetaRow], *, store_noise: bool | None = None
) -> None:
    """Write meta.tsv (header + rows). The noise_path column is written when `store_noise`, which
    defaults to whether the rows carry noise paths (all or none of them must)."""
    rows = list(rows)
    has_noise = {r.noise_path is not None for r in rows}
    if len(has_noise) > 1:
        raise _error(path, None, "some rows have noise_path and some do not")
    if store_noise is None:
        store_noise = has_noise == {True}
    if store_noise and has_noise == {False}:
        raise _error(path, None, "store_noise=True but the rows have no noise_path")
    columns = META_COLUMNS if store_noise else META_COLUMNS_NO_NOISE
    lines, ids = ["\t".join(columns)], _UniqueIds(path)
    for line_no, row in enumerate(rows, start=2):
        ids.add(row.id, line_no)
        values = dataclasses.asdict(row)
        values.update(snr_dB=repr(float(row.snr_db)), fs=int(row.fs), length=int(row.length))
        fields = [str(values[c]) for c in columns]
        for column, value in zip(columns, fields):
            _check_field(value, column, path, line_no, is_key=column == "id")
            if "\t" in value:
                raise _error(path, line_no, f"{column} {value!r} contains a tab")
        lines.append("\t".join(fields))
    _write_lines(path, lines)


# --- Track 2 data.jsonl ---


@dataclasses.dataclass(frozen=True)
class QualityRecord:
    """One line of a Track 2 data.jsonl; metric values may be NaN."""

    audio_path: str
    system_id: str
    sample_id: str
    duration: float  # seconds
    metrics: dict[str, float]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_jsonl(path: PathLike, *, allow_empty: bool = False) -> list[QualityRecord]:
    """Read data.jsonl in file order, validating keys, types and unique sample_ids."""
    records, ids = [], _UniqueIds(path, "sample_id")
    for line_no, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _error(path, line_no, f"malformed JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise _error(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
        if set(obj) != set(JSONL_KEYS):
            missing, extra = sorted(set(JSONL_KEYS) - set(obj)), sorted(set(obj) - set(JSONL_KEYS))
            raise _error(path, line_no, f"missing keys {missing}, unexpected keys {extra}")
        problems = [f"{k} is not a string" for k in JSONL_KEYS[:3] if not isinstance(obj[k], str)]
        if not _is_number(obj["duration"]):
            problems.append(f"non-numeric duration {obj['duration']!r}")
        metrics = obj["metrics"]
        if not isinstance(metrics, dict):
            problems.append(f"metrics is not an object: {metrics!r}")
        else:
            bad = [f"{k}={v!r}" for k, v in metrics.items() if not _is_number(v)]
            problems += [f"non-numeric metric {b}" for b in bad]
        if problems:
            raise _error(path, line_no, "; ".join(problems))
        ids.add(obj["sample_id"], line_no)
        metrics = {name: float(v) for name, v in metrics.items()}
        obj.update(duration=float(obj["duration"]), metrics=metrics)
        records.append(QualityRecord(**obj))
    _check_nonempty(len(records), path, allow_empty)
    return records


def write_jsonl(path: PathLike, records: Iterable[QualityRecord]) -> None:
    """Write data.jsonl sorted by sample_id, duration rounded to 3 decimals and metrics to 4
    (NaN written as `NaN`), keys in the official order."""
    records = sorted(records, key=lambda r: r.sample_id)
    lines, ids = [], _UniqueIds(path, "sample_id")
    for line_no, r in enumerate(records, start=1):
        ids.add(r.sample_id, line_no)
        obj = {
            "audio_path": r.audio_path,
            "system_id": r.system_id,
            "sample_id": r.sample_id,
            "duration": round(float(r.duration), 3),
            "metrics": {name: round(float(v), 4) for name, v in r.metrics.items()},
        }
        lines.append(json.dumps(obj))
    _write_lines(path, lines)


# --- evaluation outputs: <METRIC>.scp, RESULTS.txt ---


def read_scores(path: PathLike, *, allow_empty: bool = False) -> dict[str, float]:
    """Per-utterance scores `uid value` (`nan` for failed utterances)."""
    return read_float_kv(path, allow_empty=allow_empty)


def write_scores(path: PathLike, scores: Mapping[str, float]) -> None:
    """Write `uid value` with the Python float repr (`nan` for NaN), in mapping order."""
    write_kv(path, {uid: repr(float(v)) for uid, v in scores.items()})


def nanmean_scores(scores: Mapping[str, Mapping[str, float] | Sequence[float]]) -> dict[str, float]:
    """metric -> np.nanmean over utterances (NaN, without a warning, when every value is NaN)."""
    means = {}
    for name, values in scores.items():
        array = np.asarray(list(values.values() if isinstance(values, Mapping) else values), float)
        means[name] = float(np.nanmean(array)) if np.any(~np.isnan(array)) else math.nan
    return means


def results_lines(scores: Mapping[str, Mapping[str, float] | Sequence[float]]) -> list[str]:
    """RESULTS.txt lines `<METRIC>: <nanmean, 4 decimals>` from per-utterance scores."""
    return [f"{name}: {mean:.4f}" for name, mean in nanmean_scores(scores).items()]


def write_results(path: PathLike, means: Mapping[str, float]) -> None:
    """Write RESULTS.txt from metric means (`nanmean_scores`), 4 decimals each."""
    lines = []
    for line_no, (name, mean) in enumerate(means.items(), start=1):
        _check_field(name, "metric name", path, line_no, is_key=True)
        lines.append(f"{name}: {float(mean):.4f}")
    _write_lines(path, lines)


def read_results(path: PathLike, *, allow_empty: bool = False) -> dict[str, float]:
    """RESULTS.txt -> {metric: mean}."""
    out, names = {}, _UniqueIds(path, "metric")
    for line_no, line in _lines(path):
        name, sep, value = line.strip().rpartition(":")
        name = name.strip()
        if not sep or not name or len(name.split()) != 1:
            raise _error(path, line_no, f"expected '<METRIC>: <value>', got {line.strip()!r}")
        names.add(name, line_no)
        out[name] = _parse_float(value.strip(), f"value for {name}", path, line_no)
    _check_nonempty(len(out), path, allow_empty)
    return out
