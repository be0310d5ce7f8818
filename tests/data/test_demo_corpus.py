"""The offline demo corpus: layout and formats, content checks, determinism, held-out validation."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from urgent_jax.data import demo_corpus
from urgent_jax.data.speech_synth import SpeechSynthError, SpeechSynthesizer, Voice

SCP_FILES = ("speech_sources.scp", "noise_scoures.scp", "wind_noise_scoures.scp", "rirs.scp")
SPLITS = ("train_sources", "validation_sources")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_small")
    summary = demo_corpus.build_demo_corpus(out, seed=0, size="small", use_progress_bar=False)
    return out, summary


def _read_table(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


def _scp(root: Path, split: str, name: str) -> dict[str, tuple[int, str]]:
    return {uid: (int(fs), path) for uid, fs, path in _read_table(root / split / name)}


def _speech_items(root: Path, split: str = "train_sources"):
    return sorted(_scp(root, split, "speech_sources.scp").items())


def test_source_lists_are_well_formed(corpus):
    root, _ = corpus
    for split in SPLITS:
        folder = root / split
        lengths = dict(_read_table(folder / "source_length.scp"))
        all_uids = []
        for name in SCP_FILES:
            rows = _read_table(folder / name)
            assert rows, f"{split}/{name} is empty"
            for row in rows:
                assert len(row) == 3, row
                uid, fs, path = row
                assert Path(path).is_absolute() and Path(path).exists()
                info = sf.info(path)
                assert info.samplerate == int(fs) and info.subtype == "PCM_16"
                assert int(lengths[uid]) == info.frames
                all_uids.append(uid)
        assert len(all_uids) == len(set(all_uids)) == len(lengths)
        speech = {uid for uid, *_ in _read_table(folder / "speech_sources.scp")}
        for name in ("utt2spk", "text", "utt2lang"):
            lines = (folder / name).read_text(encoding="utf-8").splitlines()
            assert {line.split(" ", 1)[0] for line in lines} == speech
        assert all(a == b for a, b in _read_table(folder / "utt2spk"))


def test_languages_voices_and_uids(corpus):
    root, summary = corpus
    for split in SPLITS:
        utt2lang = dict(_read_table(root / split / "utt2lang"))
        assert set(utt2lang.values()) == {"eng", "deu", "fra", "spa", "zho"}
        variants = set()
        for uid, lang in utt2lang.items():
            match = re.fullmatch(r"demo_([a-z]{3})_([a-z0-9]+)_p(\d+)_r(\d+)_(\d{4})", uid)
            assert match and match.group(1) == lang, uid
            assert 30 <= int(match.group(3)) <= 80 and 130 <= int(match.group(4)) <= 200
            variants.add(match.group(2))
        assert len(variants) >= 3 and "whisper" in variants
        lines = (root / split / "text").read_text("utf-8").splitlines()
        texts = dict(line.split(" ", 1) for line in lines)
        zho = [t for uid, t in texts.items() if utt2lang[uid] == "zho"]
        assert all(re.search(r"[\u4e00-\u9fff]", t) for t in zho)
    train = summary["splits"]["train"]
    assert 60 <= train["num_speech"] <= 80 and summary["splits"]["validation"]["num_speech"] == 20
    assert len(train["speech_s_per_language"]) == 5 and train["num_rir"] >= 10
    assert 3.0 <= train["speech_s"] / train["num_speech"] <= 6.0
    assert sum(train["noise_per_type"].values()) == train["num_noise"] >= 20
    assert "whisper" in demo_corpus.format_summary(summary)
    assert json.loads(json.dumps(summary))["splits"]["train"]["num_rir"] == train["num_rir"]


def test_noise_wind_and_rir_rates_cover_speech(corpus):
    root, _ = corpus
    for split in SPLITS:
        speech_rates = {fs for fs, _ in _scp(root, split, "speech_sources.scp").values()}
        assert len(speech_rates) >= 5
        noise_rates = {fs for fs, _ in _scp(root, split, "noise_scoures.scp").values()}
        assert all(any(n >= fs for n in noise_rates) for fs in speech_rates)
        assert 48000 in noise_rates
        wind = _scp(root, split, "wind_noise_scoures.scp")
        for uid, (fs, _) in wind.items():
            match = re.fullmatch(r"wind_noise_(\d+)hz_(\d+)", uid)
            assert match and int(match.group(1)) == fs
        assert speech_rates <= {fs for fs, _ in wind.values()}
        assert speech_rates <= {fs for fs, _ in _scp(root, split, "rirs.scp").values()}
        noise_uids = _scp(root, split, "noise_scoures.scp")
        assert not any(uid.startswith("wind_noise") for uid in noise_uids)


def test_validation_is_held_out(corpus):
    root, _ = corpus
    for name in SCP_FILES + ("source_length.scp",):
        train = {row[0] for row in _read_table(root / "train_sources" / name)}
        validation = {row[0] for row in _read_table(root / "validation_sources" / name)}
        assert not train & validation, name
    def paths(split):
        return {p for name in SCP_FILES for _, p in _scp(root, split, name).values()}

    assert not paths("train_sources") & paths("validation_sources")

    def texts(split):
        lines = (root / split / "text").read_text("utf-8").splitlines()
        return {line.split(" ", 1)[1] for line in lines}

    assert not texts("train_sources") & texts("validation_sources")

    def variants(split):
        return {uid.split("_")[2] for uid, _ in _speech_items(root, split)}

    assert variants("train_sources") & variants("validation_sources") <= {"whisper"}


def _frame_power(x: np.ndarray, sample_rate: int) -> np.ndarray:
    frame = int(0.02 * sample_rate)
    return np.mean(x[: x.size // frame * frame].reshape(-1, frame) ** 2, axis=-1)


def test_speech_is_band_limited_speech(corpus):
    root, _ = corpus
    items = _speech_items(root)
    assert len({fs for _, (fs, _) in items}) == 7
    for uid, (fs, path) in items[::4]:
        x, sr = sf.read(path, dtype="float64")
        assert sr == fs and 2.0 < x.size / fs < 10.0
        assert 1e-3 < np.sqrt(np.mean(x**2)) and np.abs(x).max() < 0.9
        power = _frame_power(x, fs)
        active = power > power.max() * 1e-4  # frames within 40 dB of the loudest
        assert 0.3 < active.mean() < 0.97, uid  # speech with pauses and leading/trailing silence
        assert not active[:5].any(), uid  # the first 100 ms are silence
        spec = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.size, 1.0 / fs)
        assert spec[freqs < 11000].sum() > 0.99 * spec.sum(), uid
        assert spec[(freqs > 100) & (freqs < 4000)].sum() > 0.6 * spec.sum(), uid


def _rt60_schroeder(rir: np.ndarray, sample_rate: int) -> float:
    """T20: line fit of the Schroeder decay curve between -5 and -25 dB, extrapolated to -60 dB."""
    energy = rir[int(np.argmax(np.abs(rir))) :].astype(np.float64) ** 2
    edc = np.cumsum(energy[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0] + 1e-300)
    fit = np.flatnonzero((edc_db <= -5.0) & (edc_db >= -25.0))
    slope_db_per_s = np.polyfit(fit / sample_rate, edc_db[fit], 1)[0]
    return -60.0 / slope_db_per_s


def test_rirs_direct_path_and_reverberation_time(corpus):
    root, _ = corpus
    for split in SPLITS:
        for uid, (fs, path) in _scp(root, split, "rirs.scp").items():
            rt60_s = int(re.fullmatch(r"demo_rir_(\d+)hz_t60_(\d+)ms_\d+", uid).group(2)) / 1000
            assert 0.2 <= rt60_s <= 1.2
            rir, sr = sf.read(path, dtype="float64")
            peak = int(np.argmax(np.abs(rir)))
            onset = int(np.argmax(np.abs(rir) > 0.1 * np.abs(rir).max()))
            assert np.abs(rir[peak]) > 0.99  # normalised to peak 1 (16-bit)
            assert peak - onset <= 0.001 * sr and peak < 0.01 * sr, uid  # the direct path leads
            assert rir.size / sr > rt60_s
            assert _rt60_schroeder(rir, sr) == pytest.approx(rt60_s, rel=0.25), uid


def test_wind_files_follow_the_generator(corpus):
    root, _ = corpus
    for uid, (fs, path) in _scp(root, "train_sources", "wind_noise_scoures.scp").items():
        x, _ = sf.read(path, dtype="float64")
        assert np.abs(x).max() == pytest.approx(0.95, abs=1e-3)
        spec = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.size, 1.0 / fs)
        assert spec[freqs < 500].sum() > 0.8 * spec.sum(), uid


def test_same_seed_same_files_other_seed_other_files(corpus, tmp_path):
    root, _ = corpus

    def lists(out: Path) -> dict[str, str]:
        return {
            f"{split}/{f.name}": f.read_text("utf-8").replace(str(out), "ROOT")
            for split in SPLITS
            for f in sorted((out / split).iterdir())
        }

    again = tmp_path / "again"
    demo_corpus.build_demo_corpus(again, seed=0, size="small", use_progress_bar=False)
    assert lists(again) == lists(root)
    speech = _speech_items(root)
    some_files = [speech[0][1][1], speech[-1][1][1]]
    for name in ("noise_scoures.scp", "wind_noise_scoures.scp", "rirs.scp"):
        some_files.append(next(iter(_scp(root, "train_sources", name).values()))[1])
    for path in some_files:
        twin = Path(path.replace(str(root), str(again)))
        assert twin.read_bytes() == Path(path).read_bytes(), path

    other = tmp_path / "other"
    demo_corpus.build_demo_corpus(other, seed=1, size="small", use_progress_bar=False)
    speech_list = "train_sources/speech_sources.scp"
    assert lists(other)[speech_list] != lists(root)[speech_list]
    wind = "audio/wind/train/wind_noise_16000hz_0.wav"
    assert (other / wind).read_bytes() != (root / wind).read_bytes()


def test_synthesizer_is_repeatable_and_reports_errors(tmp_path):
    with SpeechSynthesizer() as synth:
        voice = Voice("en", "whisper", pitch=40, rate_wpm=160)
        a = synth.synthesize("Wind and rain.", voice, seed=3)
        b = synth.synthesize("Wind and rain.", voice, seed=3)
        assert synth.sample_rate == 22050 and a.dtype == np.float32 and a.size > 0.3 * 22050
        np.testing.assert_array_equal(a, b)
        with pytest.raises(SpeechSynthError, match="unknown eSpeak NG voice"):
            synth.synthesize("hello", Voice("xx-not-a-language"))
        with pytest.raises(SpeechSynthError, match="empty"):
            synth.synthesize("  ", voice)
    with pytest.raises(SpeechSynthError, match="closed"):
        synth.synthesize("hello", voice)
    with pytest.raises(SpeechSynthError, match="library not found"):
        SpeechSynthesizer(library_path="/nonexistent/libespeak-ng.so")
    fake = tmp_path / "libespeak-ng.so"
    fake.write_bytes(b"not a shared library")
    with pytest.raises(SpeechSynthError, match="cannot load eSpeak NG"):
        SpeechSynthesizer(library_path=str(fake))


def test_cli_rejects_unknown_size(tmp_path):
    with pytest.raises(SystemExit):
        demo_corpus.main(["--out", str(tmp_path), "--size", "huge"])
    with pytest.raises(ValueError, match="size"):
        demo_corpus.build_demo_corpus(tmp_path, size="huge")
