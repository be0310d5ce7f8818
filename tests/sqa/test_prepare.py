"""Tests for sqa/prepare: every corpus reader on a miniature copy of its documented layout (tiny
wav files plus the metadata tables under the official names and columns), the split directory
format (REFERENCE.md §1.5), the CLI and the file:line errors."""

from __future__ import annotations

import ast
import csv
import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from urgent_jax.sqa.data import read_jsonl
from urgent_jax.sqa.prepare import CORPORA, PrepareError, prepare_corpus
from urgent_jax.sqa.prepare.__main__ import main
from urgent_jax.sqa.prepare.tables import read_xlsx_rows


def wav(path: Path, num_samples: int = 1600, fs: int = 16000, ext_format: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.sin(2 * np.pi * 440 * np.arange(num_samples) / fs)
    sf.write(path, x, fs, format=ext_format)
    return path


def write_csv(path: Path, rows: list[list], header: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def write_xlsx(path: Path, sheet: str, rows: list[list]) -> Path:
    """A minimal xlsx workbook (shared strings for text, numbers inline), as Excel lays it out."""
    strings: list[str] = []
    cells_xml = []
    for r, row in enumerate(rows, 1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{chr(ord('A') + c)}{r}"
            if isinstance(value, str):
                strings.append(value)
                cells.append(f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>')
            else:
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
        cells_xml.append(f'<row r="{r}">{"".join(cells)}</row>')
    path.parent.mkdir(parents=True, exist_ok=True)
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("xl/workbook.xml", f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
                   f'<sheet name="Info" sheetId="1" r:id="rId1"/>'
                   f'<sheet name="{sheet}" sheetId="2" r:id="rId2"/></sheets></workbook>')
        z.writestr("xl/_rels/workbook.xml.rels",
                   '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
                   'relationships"><Relationship Id="rId1" Target="worksheets/sheet1.xml"/>'
                   '<Relationship Id="rId2" Target="worksheets/sheet2.xml"/></Relationships>')
        sheet_xml = f'<worksheet xmlns="{main}"><sheetData>{{}}</sheetData></worksheet>'
        z.writestr("xl/worksheets/sheet1.xml", sheet_xml.format(""))
        z.writestr("xl/worksheets/sheet2.xml", sheet_xml.format("".join(cells_xml)))
        si = "".join(f"<si><t>{s}</t></si>" for s in strings)
        z.writestr("xl/sharedStrings.xml", f'<sst xmlns="{main}">{si}</sst>')
    return path


# --- miniature layouts: root -> {split: {sample_id: (system_id, mos or metrics dict)}} ------------


def layout_urgent_sqa(root: Path, year: int):
    header = ["sample_id", "system_id", "mos", "utmos"]
    rows = {
        "validation": [["val_s1_x_f1", "s1", 3.5, 2.25], ["val_s2_x_f1", "s2", "", 3.0]],
        "nonblind_test": [["nb_s3_x_f2", "s3", 4.0, ""]],
        "blind_test_mos": [["bt_s4_y_f3", "s4", 1.23456, 2.0]],
    }
    for phase, phase_rows in rows.items():
        write_csv(root / f"{phase}.csv", phase_rows, header)
        for r in phase_rows:
            sub, _, fileid = r[0].split("_")[-3:]
            wav(root / phase / sub / f"{fileid}.flac", ext_format="FLAC")
    nan = math.nan
    expected = {"train": {"nb_s3_x_f2": ("s3", {"mos": 4.0, "utmos": nan}),
                          "val_s1_x_f1": ("s1", {"mos": 3.5, "utmos": 2.25}),
                          "val_s2_x_f1": ("s2", {"mos": nan, "utmos": 3.0})}}
    if year == 2024:
        expected["test"] = {"bt_s4_y_f3": ("s4", {"mos": 1.2346, "utmos": 2.0})}
    return expected


def layout_chime(root: Path):
    test = root / "listening_test"
    rows = [["a.wav", "C1", 3], ["a.wav", "C1", 4], ["a.wav", "REF", 5], ["b.wav", "C2", 2]]
    write_csv(test / "MOS_results_listening_test.csv", rows, ["sample", "condition", "MOS"])
    for sample, condition, _ in rows:
        wav(test / "data" / condition / sample)
    return {"test": {"C1_a": ("C1", 3.5), "C2_b": ("C2", 2.0)}}


def layout_nisqa(root: Path):
    header = ["db", "con", "filename_deg", "mos", "noi"]
    expected = {}
    for split, sets in {"train": ("TRAIN_SIM", "TRAIN_LIVE"), "dev": ("VAL_SIM", "VAL_LIVE"),
                        "LIVETALK": ("TEST_LIVETALK",), "FOR": ("TEST_FOR",),
                        "P501": ("TEST_P501",)}.items():
        expected[split] = {}
        for k, s in enumerate(sets):
            name = f"NISQA_{s}"
            fname = f"{s.lower()}_c{k}_0001.wav"
            write_csv(root / name / f"{name}_file.csv", [["db1", f"c{k}", fname, 2.5 + k, 3]],
                      header)
            wav(root / name / "deg" / fname, fs=48000, num_samples=4800)
            expected[split][fname[:-4]] = (f"c{k}", 2.5 + k)
    return expected


def layout_tmhint(root: Path):
    header = ["file_name", "method", "snr", "noise", "quality_score", "listener"]
    rows = [["t1", "MMSE", "-2", "babble", "3", "L1"], ["t1", "MMSE", "-2", "babble", "4", "L2"],
            ["t2", "KLT", "5", "street", "", "L1"], ["t2", "KLT", "5", "street", "2", "L2"],
            ["x9", "Noisy", "0", "pink", "1", "L1"], ["e1", "FSE", "0", "pink", "5", "L3"]]
    write_csv(root / "raw_data.csv", rows, header)
    wav(root / "train" / "t1.wav")
    wav(root / "train" / "t2.wav")
    wav(root / "test" / "e1.wav")  # x9 has no file: skipped
    return {"train": {"t1": ("MMSE-SNR-2-babble", 3.5), "t2": ("KLT-SNR5-street", 2.0)},
            "test": {"e1": ("FSE-SNR0-pink", 5.0)}}


def layout_voicemos(data_dir: Path, names: dict[str, list[list]], append_wav: bool) -> None:
    """Header-less set files (system, wav name, score, _, listener) and their wav files."""
    for split, set_name in (("train", "TRAINSET"), ("dev", "DEVSET"), ("test", "TESTSET")):
        write_csv(data_dir / "sets" / set_name, names[split])
        for _, name, _, _, _ in names[split]:
            file = name if name.endswith(".wav") or not append_wav else name + ".wav"
            wav(data_dir / "wav" / file)


def layout_bvcc(root: Path):
    data = root / "main" / "DATA"
    names = {"train": [["sysA", "sysA-utt1.wav", 3, "x", "L1"],
                       ["sysA", "sysA-utt1.wav", 5, "x", "L2"],
                       ["sysB", "sysB-utt2.wav", 1, "x", "L1"],
                       ["sysB", "sysB-utt9.wav", 4, "x", "L1"]],
             "dev": [["sysC", "sysC-utt3.wav", 2, "x", "L4"]],
             "test": [["sysD", "sysD-utt4.wav", 4, "x", "L5"]]}
    layout_voicemos(data, names, append_wav=False)
    # UTMOS22 transcriptions: sysB-utt9 has none, so it is left out as officially.
    write_csv(data / "sets" / "text", [[f"{n}.wav", "t", "0", "r"] for n in
                                       ("sysA-utt1", "sysB-utt2", "sysC-utt3", "sysD-utt4")],
              ["wav_name", "transcription", "cluster", "reference"])
    return {"train": {"utt1": ("sysA", 4.0), "utt2": ("sysB", 1.0)},
            "dev": {"utt3": ("sysC", 2.0)}, "test": {"utt4": ("sysD", 4.0)}}


def layout_bc19(root: Path):
    names = {"train": [["b01", "b01-s1", 2, "x", "L1"], ["b01", "b01-s1", 3, "x", "L2"]],
             "dev": [["b02", "b02-s2.wav", 4, "x", "L1"]],
             "test": [["b03", "b03-s3", 5, "x", "L1"]]}
    layout_voicemos(root / "ood" / "DATA", names, append_wav=True)
    return {"train": {"s1": ("b01", 2.5)}, "dev": {"s2": ("b02", 4.0)},
            "test": {"s3": ("b03", 5.0)}}


def layout_somos(root: Path):
    header = ["utteranceId", "choice", "listenerId", "systemId"]
    sets = {"train": ("TRAINSET", [["novel_1.wav", 2, "L1", "sys0"],
                                   ["novel_1.wav", 3, "L2", "sys0"]]),
            "dev": ("VALIDSET", [["news_2.wav", 4, "L1", "sys1"]]),
            "test": ("TESTSET", [["wiki_3.wav", 1, "L1", "sys2"]])}
    expected = {}
    for split, (name, rows) in sets.items():
        write_csv(root / "training_files" / "split1" / "clean" / name, rows, header)
        for r in rows:
            wav(root / "audios" / r[0], fs=24000, num_samples=2400)
        expected[split] = {rows[0][0]: (rows[0][3], float(np.mean([r[1] for r in rows])))}
    return expected


def layout_tcd_voip(root: Path):
    write_xlsx(root / "mos.xlsx", "Subjective Test Scores",
               [["Filename", "ConditionID", "sample MOS", "Listener 1"],
                ["C_01_CHOP_FG.wav", 1, 2.35, 3], ["C_02_ECHO_MK.wav", 12, 4, 4]])
    wav(root / "wav" / "C_01_CHOP_FG.wav", fs=48000, num_samples=4800)
    wav(root / "wav" / "C_02_ECHO_MK.wav", fs=48000, num_samples=4800)
    return {"train": {"C_01_CHOP_FG": ("001", 2.35), "C_02_ECHO_MK": ("012", 4.0)}}


def layout_tencent(root: Path):
    write_csv(root / "withoutReverberationTrainDevMOS.csv",
              [["./withoutReverberationTrainDev/a_1.wav", 3.2]], ["deg_wav", "mos"])
    write_csv(root / "withReverberationTrainDevMOS.csv",
              [["./withReverberationTrainDev/b_2.wav", 2.8]], ["deg_wav", "mos"])
    wav(root / "withoutReverberationTrainDev" / "a_1.wav")
    wav(root / "withReverberationTrainDev" / "b_2.wav")
    return {"train": {"withoutReverberationTrainDev_a_1": ("withoutReverberationTrainDev_a_1", 3.2),
                      "withReverberationTrainDev_b_2": ("withReverberationTrainDev_b_2", 2.8)}}


def layout_pstn(root: Path):
    base = root / "pstn_train"
    write_csv(base / "pstn_train.csv", [["12345_call.wav", 3.75, 20], ["67890_x_y.wav", 1.5, 21]],
              ["filename", "MOS", "num_votes"])
    wav(base / "12345_call.wav", fs=8000, num_samples=800)
    wav(base / "67890_x_y.wav", fs=8000, num_samples=800)
    return {"train": {"12345": ("12345", 3.75), "67890": ("67890", 1.5)}}


def layout_ttsds2(root: Path):
    header = ["rating_type", "audio", "dataset", "system", "value", "annotator"]
    rows = [["mos", "clean/e2/1.wav", "clean", "e2", "3", "a1"],
            ["mos", "clean/e2/1.wav", "clean", "e2", "4", "a2"],
            ["cmos", "clean/e2/1.wav", "clean", "e2", "1", "a1"],  # not MOS: skipped
            ["mos", "noisy/gt/2.wav", "noisy", "gt", "5", "a1"],
            ["mos", "noisy/gt/absent.wav", "noisy", "gt", "2", "a1"]]  # no file: skipped
    write_csv(root / "subjective_results.csv", rows, header)
    wav(root / "clean" / "e2" / "1.wav")
    wav(root / "noisy" / "gt" / "2.wav")
    return {"train": {"clean-e2-1": ("clean-e2", 3.5), "noisy-gt-2": ("noisy-gt", 5.0)}}


LAYOUTS = {
    "urgent2024-sqa": lambda root: layout_urgent_sqa(root, 2024),
    "urgent2025-sqa": lambda root: layout_urgent_sqa(root, 2025),
    "chime-7-udase-eval": layout_chime,
    "nisqa": layout_nisqa,
    "tmhint-qi": layout_tmhint,
    "bvcc": layout_bvcc,
    "bc19": layout_bc19,
    "somos": layout_somos,
    "tcd-voip": layout_tcd_voip,
    "tencent": layout_tencent,
    "pstn": layout_pstn,
    "ttsds2": layout_ttsds2,
}


def test_every_corpus_has_a_layout_test():
    assert set(LAYOUTS) == set(CORPORA)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-9


@pytest.mark.parametrize("corpus", sorted(LAYOUTS))
def test_corpus_preparation(corpus, tmp_path):
    root, out = tmp_path / "db" / corpus, tmp_path / "data"
    expected = LAYOUTS[corpus](root)
    counts = prepare_corpus(corpus, root, out)
    assert counts == {split: len(items) for split, items in expected.items()}
    for split, items in expected.items():
        split_dir = out / corpus / split
        records = read_jsonl(split_dir / "data.jsonl")
        assert [r["sample_id"] for r in records] == sorted(items)
        for r in records:
            system_id, labels = items[r["sample_id"]]
            labels = labels if isinstance(labels, dict) else {"mos": labels}
            assert r["system_id"] == system_id
            assert set(r["metrics"]) == set(labels)
            assert all(_same(r["metrics"][k], round(v, 4)) for k, v in labels.items()), r
            info = sf.info(r["audio_path"])
            assert r["duration"] == round(info.frames / info.samplerate, 3)
            assert Path(r["audio_path"]).is_absolute()
        # Intermediate files (§1.5): wav.scp, utt2sys, utt2dur, one <metric>.scp per metric.
        wav_lines = (split_dir / "wav.scp").read_text().splitlines()
        wav_scp = dict(line.split(" ", 1) for line in wav_lines)
        assert sorted(wav_scp) == sorted(items)
        utt2sys = dict(line.split() for line in (split_dir / "utt2sys").read_text().splitlines())
        assert utt2sys == {k: v[0] for k, v in items.items()}
        utt2dur = (split_dir / "utt2dur").read_text().splitlines()
        assert all(len(line.split()[1].split(".")[1]) == 3 for line in utt2dur)
        for metric in records[0]["metrics"]:
            values = (split_dir / f"{metric}.scp").read_text().splitlines()
            assert [v.split()[0] for v in values] == sorted(items)
            decimals = [v.split()[1].split(".") for v in values]
            assert all(d == ["nan"] or len(d[1]) == 4 for d in decimals)


def test_urgent_sqa_reads_the_official_data_prep_csv(tmp_path):
    # The official data_prep.py writes <db>/data/<split>.csv: the Hugging Face rows without audio,
    # phases concatenated, wav_path (absolute) to the flac it saved, empty cells for missing values.
    # Present, it is used instead of per-phase CSVs (here a decoy that would give other labels).
    root = tmp_path / "db"
    layout_urgent_sqa(root, 2024)
    header = ["sample_id", "system_id", "mos", "utmos", "wav_path"]
    a = wav(root / "validation" / "s1" / "f1.flac", ext_format="FLAC")
    b = wav(root / "nonblind_test" / "s3" / "f2.flac", num_samples=800, ext_format="FLAC")
    c = wav(root / "blind_test_mos" / "s4" / "f3.flac", ext_format="FLAC")
    write_csv(root / "data" / "train.csv", [["val_s1_x_f1", "s1", 2.5, "", a],
                                            ["nb_s3_x_f2", "s3", 4.0, 1.5, b]], header)  # fmt: skip
    write_csv(root / "data" / "test.csv", [["bt_s4_y_f3", "s4", 3.0, 2.0, c]], header)
    assert prepare_corpus("urgent2024-sqa", root, tmp_path / "out") == {"train": 2, "test": 1}
    train = read_jsonl(tmp_path / "out" / "urgent2024-sqa" / "train" / "data.jsonl")
    assert [(r["sample_id"], r["audio_path"], r["duration"]) for r in train] == [
        ("nb_s3_x_f2", str(b), 0.05), ("val_s1_x_f1", str(a), 0.1)]
    assert train[0]["metrics"] == {"mos": 4.0, "utmos": 1.5}
    assert train[1]["metrics"]["mos"] == 2.5 and math.isnan(train[1]["metrics"]["utmos"])
    test = read_jsonl(tmp_path / "out" / "urgent2024-sqa" / "test" / "data.jsonl")
    assert [(r["sample_id"], r["metrics"]) for r in test] == [("bt_s4_y_f3",
                                                               {"mos": 3.0, "utmos": 2.0})]
    write_csv(root / "data" / "test.csv", [["bt_s4_y_f3", "s4", 3.0, 2.0, ""]], header)
    with pytest.raises(PrepareError, match=r"test\.csv:2: no wav_path"):
        prepare_corpus("urgent2024-sqa", root, tmp_path / "out2")


def test_jsonl_line_format(tmp_path):
    layout_urgent_sqa(tmp_path / "db", 2025)
    prepare_corpus("urgent2025-sqa", tmp_path / "db", tmp_path / "data")
    lines = (tmp_path / "data" / "urgent2025-sqa" / "train" / "data.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["audio_path", "system_id", "sample_id", "duration", "metrics"]
    assert '"utmos": NaN' in lines[0]  # missing value written as NaN (§1.5)


def test_cli(tmp_path, capsys):
    layout_pstn(tmp_path / "pstn")
    rc = main(["--corpus", "pstn", "--root", str(tmp_path / "pstn"), "--out", str(tmp_path / "d")])
    assert rc == 0
    assert (tmp_path / "d" / "pstn" / "train" / "data.jsonl").is_file()
    assert "2 files" in capsys.readouterr().out
    rc = main(["--corpus", "pstn", "--root", str(tmp_path / "no"), "--out", str(tmp_path / "d")])
    assert rc == 1 and "no: corpus root is not a directory" in capsys.readouterr().err


def test_error_names_file_and_line_for_a_bad_number(tmp_path):
    layout_pstn(tmp_path)
    write_csv(tmp_path / "pstn_train" / "pstn_train.csv",
              [["12345_call.wav", 3.75], ["67890_x_y.wav", "good"]], ["filename", "MOS"])
    with pytest.raises(PrepareError, match=r"pstn_train\.csv:3: column 'MOS' is not a number"):
        prepare_corpus("pstn", tmp_path, tmp_path / "out")


def test_error_names_missing_column(tmp_path):
    write_csv(tmp_path / "subjective_results.csv", [["mos", "a.wav"]], ["rating_type", "audio"])
    with pytest.raises(PrepareError, match=r"subjective_results\.csv:1: missing column"):
        prepare_corpus("ttsds2", tmp_path, tmp_path / "out")


def test_error_names_missing_audio_and_its_row(tmp_path):
    layout_chime(tmp_path)
    (tmp_path / "listening_test" / "data" / "C2" / "b.wav").unlink()
    with pytest.raises(PrepareError, match=r"MOS_results_listening_test\.csv:5: .*b\.wav"):
        prepare_corpus("chime-7-udase-eval", tmp_path, tmp_path / "out")


def test_error_on_short_headerless_row(tmp_path):
    layout_bc19(tmp_path)
    write_csv(tmp_path / "ood" / "DATA" / "sets" / "DEVSET", [["b02", "b02-s2.wav"]])
    with pytest.raises(PrepareError, match=r"DEVSET:1: expected at least 5 columns"):
        prepare_corpus("bc19", tmp_path, tmp_path / "out")


def test_error_on_duplicate_sample_id(tmp_path):
    base = tmp_path / "pstn_train"
    write_csv(base / "pstn_train.csv", [["1_a.wav", 3.0], ["1_b.wav", 2.0]], ["filename", "MOS"])
    wav(base / "1_a.wav")
    wav(base / "1_b.wav")
    with pytest.raises(PrepareError, match=r"pstn_train\.csv:3: duplicate sample_id '1'"):
        prepare_corpus("pstn", tmp_path, tmp_path / "out")


def test_xlsx_errors(tmp_path):
    path = write_xlsx(tmp_path / "m.xlsx", "Scores", [["Filename"], ["a.wav"]])
    assert [r.cells for r in read_xlsx_rows(path, "Scores")] == [{"Filename": "a.wav"}]
    with pytest.raises(PrepareError, match="no sheet 'Subjective Test Scores'"):
        read_xlsx_rows(path, "Subjective Test Scores")
    (tmp_path / "bad.xlsx").write_text("not a zip")
    with pytest.raises(PrepareError, match="bad.xlsx: not a readable xlsx"):
        read_xlsx_rows(tmp_path / "bad.xlsx", "Scores")


def test_unknown_corpus(tmp_path):
    with pytest.raises(PrepareError, match="unknown corpus 'nope'"):
        prepare_corpus("nope", tmp_path, tmp_path / "out")


DOCUMENTED = ("configs/sqa/universa_ext.py", "urgent_jax/sqa/train.py", "urgent_jax/sqa/infer.py",
              "urgent_jax/sqa/eval.py")  # fmt: skip


def test_documented_data_paths_are_what_prepare_writes(tmp_path):
    """Every data/<corpus>/<split>/data.jsonl in the SQA commands' docstrings is a file that
    `python -m urgent_jax.sqa.prepare --out data` writes (corpus name and split)."""
    repo = Path(__file__).resolve().parents[2]
    found = set()
    for rel in DOCUMENTED:
        doc = ast.get_docstring(ast.parse((repo / rel).read_text()))
        found |= {(rel, *m) for m in re.findall(r"\bdata/([\w.-]+)/([\w.-]+)/data\.jsonl", doc)}
    assert {rel for rel, _, _ in found} == set(DOCUMENTED)
    splits = {}  # corpus -> the splits its preparation writes
    for rel, corpus, split in sorted(found):
        assert corpus in CORPORA, f"{rel}: data/{corpus}/{split}: no corpus {corpus!r}"
        if corpus not in splits:
            splits[corpus] = set(LAYOUTS[corpus](tmp_path / corpus))
        assert split in splits[corpus], f"{rel}: data/{corpus}/{split}: splits {splits[corpus]}"
