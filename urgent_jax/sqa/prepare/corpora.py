"""Per-corpus readers: a corpus root in its documented layout -> {split: [Rating]}.

Facts follow the official Track 2 preparation scripts (urgent2026_challenge_track2,
scripts/data/<corpus>/; read at commit 6db9fde8ac09a21c66b255c7bc00e128ae107ec9). `root` is the
corpus directory after the official download / unzip / move steps of its prepare.sh. Listener
scores become `mos` = mean per audio file (scp.aggregate). Splits, layouts and ids:

  urgent2024-sqa     train = phases validation + nonblind_test, test = blind_test_mos;
  urgent2025-sqa     train = validation + nonblind_test. Either the official data_prep.py output,
                     <root>/data/<split>.csv (the Hugging Face rows without `audio`, phases
                     concatenated, wav_path to the saved flac), or, without it, per phase
                     <root>/<phase>.csv (the same columns: sample_id, system_id, metric columns,
                     empty = NaN; an optional wav_path column) with audio at
                     <root>/<phase>/<submission_id>/<fileid>.flac, where sample_id ends with
                     _<submission_id>_<x>_<fileid>.
  chime-7-udase-eval test: listening_test/MOS_results_listening_test.csv (sample, condition, MOS);
                     audio listening_test/data/<condition>/<sample>; rows of condition "ref" are
                     skipped; system = condition, sample_id = <condition>_<sample stem>.
  nisqa              train = NISQA_TRAIN_SIM + NISQA_TRAIN_LIVE, dev = NISQA_VAL_SIM +
                     NISQA_VAL_LIVE, LIVETALK / FOR / P501 = NISQA_TEST_<name>: <set>/<set>_file.csv
                     (con, filename_deg, mos), audio <set>/deg/<filename_deg>; system = con,
                     sample_id = filename stem.
  tmhint-qi          raw_data.csv (file_name, method, snr, noise, quality_score; one row per
                     listener); train / test = the rows whose <split>/<file_name>.wav exists; empty
                     scores skipped; system = <method>-SNR<snr>-<noise>, sample_id = file_name.
  bvcc               main/DATA/sets/{TRAINSET, DEVSET, TESTSET} -> train / dev / test, no header:
                     system, wav name, score, _, listener; audio main/DATA/wav/<wav name>;
                     sample_id = stem of the part after the first '-'. The official script keeps
                     only files listed in UTMOS22's transcriptions_clustered.csv (downloaded as
                     main/DATA/sets/text, column wav_name); applied when that file exists.
  bc19               ood/DATA/sets/{TRAINSET, DEVSET, TESTSET} as BVCC (".wav" appended to names
                     without it; no transcription filter); audio ood/DATA/wav/.
  somos              training_files/split1/clean/{TRAINSET, VALIDSET, TESTSET} -> train / dev /
                     test (systemId, utteranceId, choice, listenerId); audio audios/<utteranceId>;
                     sample_id = utteranceId as written.
  tcd-voip           train: mos.xlsx, sheet "Subjective Test Scores" (Filename, ConditionID,
                     sample MOS); audio wav/<Filename>; system = ConditionID zero-padded to 3
                     digits, sample_id = Filename stem.
  tencent            train: withoutReverberationTrainDevMOS.csv + withReverberationTrainDevMOS.csv
                     (deg_wav, mos); audio <root>/<deg_wav without "./">; sample_id = that path
                     without ".wav", '/' -> '_'; system = sample_id (no system information).
  pstn               train: pstn_train/pstn_train.csv (filename, MOS); audio pstn_train/<filename>;
                     sample_id = filename stem up to its first '_'; system = sample_id.
  ttsds2             train: subjective_results.csv rows with rating_type "mos" (audio, dataset,
                     system, value, annotator) whose audio <root>/<audio> exists;
                     system = <dataset>-<system>, sample_id = <system>-<audio basename w/o .wav>.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

from urgent_jax.sqa.prepare.scp import METRIC_NAMES, Rating
from urgent_jax.sqa.prepare.tables import (
    PrepareError,
    Row,
    cell,
    number,
    read_csv_rows,
    read_xlsx_rows,
)

logger = logging.getLogger(__name__)

Splits = dict[str, list[Rating]]


def _scored(row: Row, wav_path, system_id: str, sample_id: str, score: float) -> Rating:
    return Rating(str(wav_path), system_id, sample_id, score, {}, row.where)


# --- Hugging Face SQA sets (URGENT 2024 / 2025 listening tests) -----------------------------------


def _urgent_sqa_rows(csv_path: Path, audio_dir: Path | None) -> list[Rating]:
    """Ratings of one CSV of Hugging Face rows (without `audio`). A row without wav_path has its
    audio at <audio_dir>/<submission_id>/<fileid>.flac (audio_dir None: wav_path is required)."""
    ratings = []
    for row in read_csv_rows(csv_path, required=("sample_id", "system_id")):
        sample_id = cell(row, "sample_id")
        wav_path = row.cells.get("wav_path", "").strip()
        if not wav_path:
            if audio_dir is None:
                raise PrepareError(f"{row.where}: no wav_path (the official data_prep.py writes "
                                   "one per row)")  # fmt: skip
            parts = sample_id.split("_")
            if len(parts) < 3:
                raise PrepareError(f"{row.where}: sample_id {sample_id!r} does not end "
                                   "with _<submission>_<x>_<fileid>")  # fmt: skip
            submission_id, _, fileid = parts[-3:]
            wav_path = audio_dir / submission_id / f"{fileid}.flac"
        metrics = {}
        for name in METRIC_NAMES:
            if name in row.cells:
                metrics[name] = number(row, name) if cell(row, name) else math.nan
        ratings.append(Rating(str(wav_path), cell(row, "system_id"), sample_id, None,
                              metrics, row.where))  # fmt: skip
    return ratings


def _urgent_sqa(root: Path, phases: dict[str, tuple[str, ...]]) -> Splits:
    splits: Splits = {}
    for split, names in phases.items():
        official = root / "data" / f"{split}.csv"  # written by the official data_prep.py
        if official.exists():
            splits[split] = _urgent_sqa_rows(official, None)
            continue
        splits[split] = [r for phase in names for r in _urgent_sqa_rows(root / f"{phase}.csv",
                                                                        root / phase)]  # fmt: skip
    return splits


def urgent2024_sqa(root: Path) -> Splits:
    return _urgent_sqa(root, {"train": ("validation", "nonblind_test"),
                              "test": ("blind_test_mos",)})  # fmt: skip


def urgent2025_sqa(root: Path) -> Splits:
    return _urgent_sqa(root, {"train": ("validation", "nonblind_test")})


# --- listening-test corpora -----------------------------------------------------------------------


def chime7_udase_eval(root: Path) -> Splits:
    test = root / "listening_test"
    ratings = []
    rows = read_csv_rows(test / "MOS_results_listening_test.csv",
                         required=("sample", "condition", "MOS"))  # fmt: skip
    for row in rows:
        condition = cell(row, "condition")
        if condition.lower() == "ref":
            continue
        sample = cell(row, "sample")
        sample_id = f"{condition}_{sample.rsplit('.', 1)[0]}"
        wav_path = test / "data" / condition / sample
        ratings.append(_scored(row, wav_path, condition, sample_id, number(row, "MOS")))
    return {"test": ratings}


def nisqa(root: Path) -> Splits:
    sets = {
        "train": ("NISQA_TRAIN_SIM", "NISQA_TRAIN_LIVE"),
        "dev": ("NISQA_VAL_SIM", "NISQA_VAL_LIVE"),
        **{name: (f"NISQA_TEST_{name}",) for name in ("LIVETALK", "FOR", "P501")},
    }
    splits: Splits = {}
    for split, names in sets.items():
        ratings = []
        for name in names:
            rows = read_csv_rows(root / name / f"{name}_file.csv",
                                 required=("con", "filename_deg", "mos"))  # fmt: skip
            for row in rows:
                filename = cell(row, "filename_deg")
                sample_id = os.path.splitext(filename)[0]
                ratings.append(_scored(row, root / name / "deg" / filename, cell(row, "con"),
                                       sample_id, number(row, "mos")))  # fmt: skip
        splits[split] = ratings
    return splits


def tmhint_qi(root: Path) -> Splits:
    required = ("file_name", "method", "snr", "noise", "quality_score")
    rows = list(read_csv_rows(root / "raw_data.csv", required=required))
    splits: Splits = {}
    for split in ("train", "test"):
        ratings = []
        for row in rows:
            sample_id = cell(row, "file_name")
            wav_path = root / split / f"{sample_id}.wav"
            if not cell(row, "quality_score") or not wav_path.is_file():
                continue  # unrated, or a file of the other split
            system_id = f"{cell(row, 'method')}-SNR{cell(row, 'snr')}-{cell(row, 'noise')}"
            ratings.append(_scored(row, wav_path, system_id, sample_id,
                                   number(row, "quality_score")))  # fmt: skip
        splits[split] = ratings
    return splits


def _transcribed(sets_dir: Path) -> set[str] | None:
    """wav names (without .wav) of UTMOS22's transcriptions, saved by the official script as
    <sets>/text; None when absent."""
    path = sets_dir / "text"
    if not path.is_file():
        return None
    rows = read_csv_rows(path, required=("wav_name",))
    return {cell(r, "wav_name").replace(".wav", "") for r in rows}


def _voicemos(data_dir: Path, *, use_transcriptions: bool, append_wav: bool) -> Splits:
    """BVCC / BC19 (VoiceMOS 2022 main and OOD tracks): header-less set files."""
    sets_dir = data_dir / "sets"
    known = _transcribed(sets_dir) if use_transcriptions else None
    if use_transcriptions and known is None:
        logger.warning("%s missing: the official BVCC preparation keeps only files listed in "
                       "UTMOS22's transcriptions_clustered.csv; keeping every row",
                       sets_dir / "text")  # fmt: skip
    splits: Splits = {}
    for split, name in (("train", "TRAINSET"), ("dev", "DEVSET"), ("test", "TESTSET")):
        ratings = []
        for row in read_csv_rows(sets_dir / name, header=False):
            system_id, wav = cell(row, 0, 5), cell(row, 1, 5)
            if append_wav and not wav.endswith(".wav"):
                wav += ".wav"
            if "-" not in wav:
                raise PrepareError(f"{row.where}: wav name {wav!r} is not <system>-<utterance>")
            sample_id = os.path.splitext(wav.split("-")[1])[0]
            if known is not None and f"{system_id}-{sample_id}" not in known:
                continue
            ratings.append(_scored(row, data_dir / "wav" / wav, system_id, sample_id,
                                   number(row, 2)))  # fmt: skip
        splits[split] = ratings
    return splits


def bvcc(root: Path) -> Splits:
    return _voicemos(root / "main" / "DATA", use_transcriptions=True, append_wav=False)


def bc19(root: Path) -> Splits:
    return _voicemos(root / "ood" / "DATA", use_transcriptions=False, append_wav=True)


def somos(root: Path) -> Splits:
    sets_dir = root / "training_files" / "split1" / "clean"
    splits: Splits = {}
    for split, name in (("train", "TRAINSET"), ("dev", "VALIDSET"), ("test", "TESTSET")):
        rows = read_csv_rows(sets_dir / name, required=("systemId", "utteranceId", "choice"))
        splits[split] = [
            _scored(row, root / "audios" / cell(row, "utteranceId"), cell(row, "systemId"),
                    cell(row, "utteranceId"), number(row, "choice"))
            for row in rows
        ]  # fmt: skip
    return splits


def tcd_voip(root: Path) -> Splits:
    rows = read_xlsx_rows(root / "mos.xlsx", "Subjective Test Scores",
                          required=("Filename", "ConditionID", "sample MOS"))  # fmt: skip
    ratings = []
    for row in rows:
        filename = cell(row, "Filename")
        system_id = cell(row, "ConditionID").zfill(3)
        sample_id = os.path.splitext(filename)[0]
        ratings.append(_scored(row, root / "wav" / filename, system_id, sample_id,
                               number(row, "sample MOS")))  # fmt: skip
    return {"train": ratings}


def tencent(root: Path) -> Splits:
    ratings = []
    for name in ("withoutReverberationTrainDevMOS.csv", "withReverberationTrainDevMOS.csv"):
        for row in read_csv_rows(root / name, required=("deg_wav", "mos")):
            wav = cell(row, "deg_wav").replace("./", "")
            sample_id = wav.replace(".wav", "").replace("/", "_")
            ratings.append(_scored(row, root / wav, sample_id, sample_id, number(row, "mos")))
    return {"train": ratings}


def pstn(root: Path) -> Splits:
    base = root / "pstn_train"
    ratings = []
    for row in read_csv_rows(base / "pstn_train.csv", required=("filename", "MOS")):
        filename = cell(row, "filename")
        sample_id = os.path.splitext(filename)[0].split("_")[0]
        ratings.append(_scored(row, base / filename, sample_id, sample_id, number(row, "MOS")))
    return {"train": ratings}


def ttsds2(root: Path) -> Splits:
    required = ("rating_type", "audio", "dataset", "system", "value")
    ratings = []
    for row in read_csv_rows(root / "subjective_results.csv", required=required):
        if cell(row, "rating_type") != "mos":
            continue
        wav_path = root / cell(row, "audio")
        if not wav_path.is_file():
            continue  # the official script skips ratings of absent files
        system_id = f"{cell(row, 'dataset')}-{cell(row, 'system')}"
        sample_id = f"{system_id}-{os.path.basename(cell(row, 'audio')).replace('.wav', '')}"
        ratings.append(_scored(row, wav_path, system_id, sample_id, number(row, "value")))
    return {"train": ratings}


CORPORA: dict[str, Callable[[Path], Splits]] = {
    "urgent2024-sqa": urgent2024_sqa,
    "urgent2025-sqa": urgent2025_sqa,
    "chime-7-udase-eval": chime7_udase_eval,
    "nisqa": nisqa,
    "tmhint-qi": tmhint_qi,
    "bvcc": bvcc,
    "bc19": bc19,
    "somos": somos,
    "tcd-voip": tcd_voip,
    "tencent": tencent,
    "pstn": pstn,
    "ttsds2": ttsds2,
}
