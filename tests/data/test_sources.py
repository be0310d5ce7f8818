"""Tests for data/sources.py: item contents, DM selection rules, RIR handling and bad files."""

from __future__ import annotations

import logging
import math
import pickle

import numpy as np
import pytest
import soundfile as sf

from tests.data.conftest import PRESIM_RATES, append_lines, write_bad_files, write_presimulated_set
from urgent_jax.data.manifest import read_source_list
from urgent_jax.data.sources import (
    REASONS,
    BadFileCounter,
    BadFileError,
    DynamicMixingSource,
    PresimulatedSource,
)


def _read(path, start=0, num=-1):
    return sf.read(str(path), start=start, frames=num, dtype="float32", always_2d=True)[0][:, 0]


def _offsets(full: np.ndarray, part: np.ndarray) -> list[int]:
    """Every s with full[s : s + len(part)] == part."""
    starts = np.flatnonzero(full[: full.size - part.size + 1] == part[0])
    return [int(s) for s in starts if np.array_equal(full[s : s + part.size], part)]


# --- pre-simulated ---


def test_presimulated_items_match_files(presim_set):
    src = PresimulatedSource(presim_set)
    assert len(src) == sum(PRESIM_RATES.values())
    assert sorted(set(src.sample_rates().tolist())) == sorted(PRESIM_RATES)
    for i in (0, 8, len(src) - 1):
        item = src[i]
        assert item["noisy"].dtype == item["target"].dtype == np.float32
        assert item["fs"].dtype == item["length"].dtype == item["index"].dtype == np.int32
        assert int(item["index"]) == i and int(item["fs"]) == src.sample_rates()[i]
        np.testing.assert_array_equal(item["noisy"], _read(src.noisy_paths[i]))
        np.testing.assert_array_equal(item["target"], _read(src.target_paths[i]))
        assert int(item["length"]) == src.lengths()[i] == item["noisy"].size
        assert not item["skipped"].any()


def test_presimulated_lengths_from_headers_equal_length_file(presim_set, tmp_path):
    no_lengths = write_presimulated_set(tmp_path, with_lengths=False)
    np.testing.assert_array_equal(
        PresimulatedSource(no_lengths).lengths(), PresimulatedSource(presim_set).lengths()
    )


def test_presimulated_crop_uses_one_offset_for_noisy_and_target(presim_set):
    src = PresimulatedSource(presim_set)
    i = int(np.argmax(src.lengths()))
    item = src.load(i, np.random.default_rng(3), max_num_samples=2000)
    assert int(item["length"]) == 2000
    full_noisy, full_target = _read(src.noisy_paths[i]), _read(src.target_paths[i])
    starts = _offsets(full_noisy, item["noisy"])
    assert len(starts) == 1 and starts[0] > 0
    np.testing.assert_array_equal(item["target"], full_target[starts[0] : starts[0] + 2000])


def test_presimulated_bad_pair_raises_by_default_and_is_replaced_under_skip(tmp_path):
    set_dir = write_presimulated_set(tmp_path / "set")
    bad = write_bad_files(tmp_path / "bad", 16000)
    # Point the first 16 kHz pair's noisy file at the NaN file (length table still says 1 s).
    src = PresimulatedSource(set_dir)
    i = int(np.flatnonzero(src.sample_rates() == 16000)[0])
    wav = (set_dir / "wav.scp").read_text().replace(src.noisy_paths[i], str(bad["non_finite"]))
    (set_dir / "wav.scp").write_text(wav)
    with pytest.raises(BadFileError, match="bad_non_finite.wav: non_finite") as info:
        PresimulatedSource(set_dir)[i]
    assert info.value.reason == "non_finite" and info.value.path == str(bad["non_finite"])
    src = PresimulatedSource(set_dir, policy="skip")
    item = src[i]
    assert int(item["index"]) != i and int(item["fs"]) == 16000
    assert item["skipped"].tolist() == [int(r == "non_finite") for r in REASONS]
    assert src.counter.paths == {str(bad["non_finite"]): "non_finite"}


def test_presimulated_wrong_rate_is_bad(tmp_path):
    set_dir = write_presimulated_set(tmp_path)
    utt2fs = (set_dir / "utt2fs").read_text().replace("fileid_1 8000", "fileid_1 16000")
    (set_dir / "utt2fs").write_text(utt2fs)
    with pytest.raises(BadFileError, match="wrong_rate.*file rate 8000 Hz, list says 16000 Hz"):
        PresimulatedSource(set_dir)[0]


# --- dynamic mixing ---


def test_dm_speech_noise_rir_rates_and_lengths(demo_sources):
    src = DynamicMixingSource(demo_sources, p_reverb=1.0, max_num_samples=16000)
    noise_rates = {e.uid: e.fs for e in src.noise}
    assert np.all(np.diff(src.sample_rates()) >= 0)  # grouped by rate
    for i in range(0, len(src), 3):
        item = src.load(i, np.random.default_rng(i), 16000)
        fs = int(item["fs"])
        assert item["speech"].dtype == item["noise"].dtype == item["rir"].dtype == np.float32
        assert 0 < item["speech"].size <= 16000
        assert item["noise"].size == item["speech"].size  # long noises cover the speech
        assert noise_rates[item["noise_uid"]] == int(item["noise_fs"]) >= fs
        assert int(item["rir_fs"]) >= fs and 0 < item["rir"].size <= src.rir_num_samples(fs)
        for name in ("speech", "noise", "rir"):
            assert np.all(np.isfinite(item[name])) and np.abs(item[name]).max() > 0
        # speech is a window of its file at the list rate (the crop is by samples, any rate)
        assert _offsets(_read(src.speech[i].path), item["speech"])


def _write_list(path, entries):
    path.write_text("".join(f"{e.uid} {e.fs} {e.path}\n" for e in entries))


def test_dm_noise_never_lower_rate_and_resampled_down(sources_copy):
    """With only 8 kHz and 48 kHz noise, 16 kHz speech must get (resampled) 48 kHz noise."""
    noise = read_source_list(sources_copy / "noise_scoures.scp")
    _write_list(sources_copy / "noise_scoures.scp", [e for e in noise if e.fs in (8000, 48000)])
    (sources_copy / "wind_noise_scoures.scp").unlink()
    src = DynamicMixingSource(sources_copy, p_reverb=0.0, max_num_samples=8000)
    seen = set()
    for i in np.flatnonzero(src.sample_rates() <= 16000):
        item = src.load(int(i), np.random.default_rng(int(i)), 8000)
        fs, noise_fs = int(item["fs"]), int(item["noise_fs"])
        seen.add((fs, noise_fs))
        assert noise_fs == (8000 if fs == 8000 else 48000)
        assert item["noise"].size == item["speech"].size and item["rir"].size == 0
    assert (16000, 48000) in seen and (8000, 8000) in seen


def test_dm_wind_probability(demo_sources):
    src = DynamicMixingSource(demo_sources, p_wind=0.5, p_reverb=0.0, max_num_samples=4000)
    is_wind = []
    for k in range(240):
        item = src.load(k % len(src), np.random.default_rng([1, k]), 4000)
        assert bool(item["is_wind"]) == item["noise_uid"].startswith("wind_noise")
        is_wind.append(bool(item["is_wind"]))
    assert abs(np.mean(is_wind) - 0.5) < 0.1  # binomial sd 0.032
    src = DynamicMixingSource(demo_sources, p_wind=0.0, p_reverb=0.0)
    assert not any(src.load(k, np.random.default_rng(k), 4000)["is_wind"] for k in range(40))


def test_dm_rir_kept_from_its_start_and_truncated_at_the_end(demo_sources):
    """The official DM crops RIRs at random (§6.7); here the direct path is always kept."""
    src = DynamicMixingSource(demo_sources, p_reverb=1.0, max_num_samples=4000)
    short = DynamicMixingSource(demo_sources, p_reverb=1.0, max_rir_duration_s=0.05)
    rir_paths = {e.uid: e.path for e in src.rir}
    checked = 0
    for i in range(len(src)):
        for s, limit_s in ((src, 2.0), (short, 0.05)):
            item = s.load(i, np.random.default_rng(i), 4000)
            if int(item["rir_fs"]) != int(item["fs"]):
                continue
            full = _read(rir_paths[item["rir_uid"]])
            expected = full[: math.floor(limit_s * int(item["fs"]))]
            np.testing.assert_array_equal(item["rir"], expected)
            assert np.argmax(np.abs(item["rir"])) == np.argmax(np.abs(full))  # direct path kept
            checked += 1
    assert checked == 2 * len(src)


def test_dm_item_deterministic_for_rng(demo_sources):
    src = DynamicMixingSource(demo_sources, p_wind=0.3)
    a = src.load(5, np.random.default_rng([0, 1, 5]), 8000)
    b = pickle.loads(pickle.dumps(src)).load(5, np.random.default_rng([0, 1, 5]), 8000)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_dm_bad_speech_skipped_with_reasons(demo_sources, sources_copy, tmp_path):
    bad = write_bad_files(tmp_path / "bad", 16000)
    append_lines(
        sources_copy / "speech_sources.scp", [f"bad_{r} 16000 {p}" for r, p in bad.items()]
    )
    src = DynamicMixingSource(sources_copy, max_num_samples=8000)
    uids = [e.uid for e in src.speech]
    totals = np.zeros(len(REASONS), int)
    for reason in bad:
        i = uids.index(f"bad_{reason}")
        item = src.load(i, np.random.default_rng(i), 8000)
        assert int(item["fs"]) == 16000 and not item["speech_uid"].startswith("bad_")
        assert np.all(np.isfinite(item["speech"])) and np.abs(item["speech"]).max() > 0
        assert item["skipped"][REASONS.index(reason)] >= 1  # later bad files may follow it
        totals += item["skipped"]
    # each bad file is met once as itself and maybe again as the replacement of an earlier one
    assert set(src.counter.paths.items()) == {(str(p), r) for r, p in bad.items()}
    assert all(totals[REASONS.index(r)] >= 1 for r in bad)

    # policy "raise": header problems fail when lengths are read, the others when loaded
    good_lines = (demo_sources / "speech_sources.scp").read_text()
    for reason, path in bad.items():
        (sources_copy / "speech_sources.scp").write_text(good_lines + f"bad 16000 {path}\n")
        strict = DynamicMixingSource(sources_copy, max_num_samples=8000, policy="raise")
        i = [e.uid for e in strict.speech].index("bad")
        with pytest.raises(BadFileError) as info:
            strict.load(i, np.random.default_rng(0), 8000)
        assert (info.value.path, info.value.reason) == (str(path), reason)
        assert str(path) in str(info.value)


def test_dm_silent_and_nan_noise_redrawn(sources_copy, tmp_path):
    bad = write_bad_files(tmp_path / "bad", 8000)
    good = [e for e in read_source_list(sources_copy / "noise_scoures.scp") if e.fs == 8000][:1]
    lines = [f"bad_{r} 8000 {bad[r]}" for r in ("silent", "non_finite")]
    _write_list(sources_copy / "noise_scoures.scp", good)
    append_lines(sources_copy / "noise_scoures.scp", lines)
    speech = read_source_list(sources_copy / "speech_sources.scp")
    _write_list(sources_copy / "speech_sources.scp", [e for e in speech if e.fs == 8000])
    src = DynamicMixingSource(sources_copy, p_wind=0.0, p_reverb=0.0, max_num_samples=4000)
    counts = np.zeros(len(REASONS), int)
    for k in range(4 * len(src)):
        item = src.load(k % len(src), np.random.default_rng(k), 4000)
        counts += item["skipped"]
        assert item["noise_uid"] == good[0].uid
        assert np.all(np.isfinite(item["noise"])) and np.abs(item["noise"]).max() > 0
    assert counts[REASONS.index("silent")] > 0 and counts[REASONS.index("non_finite")] > 0
    assert counts.sum() == counts[REASONS.index("silent")] + counts[REASONS.index("non_finite")]


# --- the counter ---


def test_counter_rate_limits_warnings_and_summarises(caplog):
    counter = BadFileCounter("skip", warning_interval_s=3600.0)
    with caplog.at_level(logging.WARNING, logger="urgent_jax.data.sources"):
        for k in range(5):
            counter.report(BadFileError(f"/x/missing_{k}.wav", "missing"))
        counter.report(BadFileError("/x/zero.wav", "silent", "peak 0"))
    assert len(caplog.records) == 2  # one per reason within the interval
    assert "/x/missing_0.wav" in caplog.records[0].getMessage()
    assert counter.as_dict()["missing"] == 5 and counter.as_dict()["silent"] == 1
    text = counter.summary()
    assert "6 skipped" in text and "missing: 5" in text and "silent: /x/zero.wav" in text
    clone = pickle.loads(pickle.dumps(counter))
    clone.add_counts(np.eye(len(REASONS), dtype=np.int32)[REASONS.index("empty")])
    assert clone.as_dict()["empty"] == 1 and clone.as_dict()["missing"] == 5
    with pytest.raises(BadFileError, match="nope.wav: unreadable"):
        BadFileCounter("raise").report(BadFileError("nope.wav", "unreadable"))
    with pytest.raises(ValueError):
        BadFileError("a.wav", "strange")
