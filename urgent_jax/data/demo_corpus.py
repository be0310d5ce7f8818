"""The offline demo corpus: eSpeak NG speech, procedural noise, wind and RIRs in the URGENT layout.

    python -m urgent_jax.data.demo_corpus --out DIR [--seed S] [--size small|medium]

builds, without network access, a small corpus laid out like the official Track 1 source lists
(REFERENCE.md §1.1):

    DIR/train_sources/        speech_sources.scp noise_scoures.scp wind_noise_scoures.scp
                              rirs.scp source_length.scp utt2spk text utt2lang
    DIR/validation_sources/   the same files for held-out sources
    DIR/audio/{speech,noise,wind,rir}/<split>/...   16-bit flac (speech) and wav (the rest)

Speech is synthesized at 22050 Hz in five languages with several voice variants, prosody settings,
levels and silences, then resampled with the filter of `audio.resample` to one of the seven URGENT
rates (so above 22050 Hz it is band-limited to about 10 kHz, like upsampled real corpora). Noise is
procedural (white, pink, brown, babble, mains hum, clicks, fan) at rates covering the speech rates;
wind comes from the official generator (`simulation/wind.py`); RIRs from `room.py`. Validation uses
other sentences, voices, noises, RIRs and uids. Everything is drawn from
`np.random.default_rng([seed, ...])` streams and the synthesizer is deterministic, so a seed gives
bit-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import scipy.signal
from tqdm import tqdm

from urgent_jax.audio.filters import next_fast_len
from urgent_jax.audio.io import write_audio
from urgent_jax.audio.resample import SAMPLE_RATES, resample_numpy
from urgent_jax.data.room import synthesize_rir
from urgent_jax.data.speech_synth import (
    ESPEAK_LANGUAGES,
    ESPEAK_SAMPLE_RATE,
    SENTENCES,
    SpeechSynthesizer,
    Voice,
)
from urgent_jax.simulation.wind import generate_wind_noise

LANGUAGES = tuple(ESPEAK_LANGUAGES)  # eng deu fra spa zho
NOISE_TYPES = ("white", "pink", "brown", "babble", "hum", "clicks", "fan")
# Share of speech per stored rate, roughly that of the URGENT lists (most 16 and 48 kHz).
SPEECH_RATE_SHARES = {
    8000: 0.05,
    16000: 0.30,
    22050: 0.10,
    24000: 0.10,
    32000: 0.10,
    44100: 0.15,
    48000: 0.20,
}
TRAIN_VARIANTS = ("m1", "m3", "m7", "f2", "f3", "f4", "klatt", "whisper")
VALIDATION_VARIANTS = ("m2", "m4", "f1", "f5", "klatt3", "whisper")
_SENTENCE_PARTS = {"train": slice(0, 16), "validation": slice(16, 21), "babble": slice(21, None)}


@dataclasses.dataclass(frozen=True)
class CorpusSize:
    """How many sources each split gets."""

    num_speech: tuple[int, int]  # utterances (train, validation)
    num_noise: tuple[int, int]  # procedural noise files (train, validation)
    wind_per_rate: tuple[int, int]  # wind clips per sampling rate (train, validation)
    rir_per_rate: tuple[int, int]  # RIRs per sampling rate (train, validation)
    wind_duration_s: float  # length of each wind clip (the official clips last 15 s)


SIZES = {
    "small": CorpusSize((70, 20), (24, 8), (2, 1), (2, 1), 5.0),
    "medium": CorpusSize((350, 100), (120, 40), (10, 5), (10, 3), 15.0),
}
_SPLITS = ("train", "validation")
_SOURCES_DIRS = {"train": "train_sources", "validation": "validation_sources"}
_INDEX_OFFSET = {"train": 0, "validation": 1000}  # validation uids never collide with train


@dataclasses.dataclass
class _Speech:
    uid: str
    language: str
    text: str
    voice: Voice
    sample_rate: int
    synth_seed: int
    leading_silence_s: float
    trailing_silence_s: float
    level_db: float  # active RMS level, dBFS
    floor_db: float  # recording noise floor below the active level, dB


@dataclasses.dataclass
class _Noise:
    uid: str
    kind: str
    sample_rate: int
    duration_s: float
    peak_db: float
    rng: np.random.Generator  # the stream this file's content is drawn from


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _allocate_rates(num: int, rng: np.random.Generator) -> list[int]:
    """num rates following SPEECH_RATE_SHARES (each rate at least once if num >= 7), shuffled."""
    rates = list(SPEECH_RATE_SHARES)
    shares = np.array([SPEECH_RATE_SHARES[r] for r in rates])
    counts = np.ones(len(rates), int) if num >= len(rates) else np.zeros(len(rates), int)
    remaining = num - counts.sum()
    extra = shares / shares.sum() * remaining
    counts += np.floor(extra).astype(int)
    order = np.argsort(-(extra - np.floor(extra)), kind="stable")  # largest remainders first
    counts[order[: num - counts.sum()]] += 1
    allocation = np.repeat(rates, counts)
    return [int(r) for r in rng.permutation(allocation)]


def _voice(language: str, variant: str, rng: np.random.Generator) -> Voice:
    return Voice(
        language=ESPEAK_LANGUAGES[language],
        variant=variant,
        pitch=int(rng.integers(30, 81)),
        pitch_range=int(rng.integers(30, 91)),
        rate_wpm=int(rng.integers(130, 201)),
    )


def _plan_speech(split: str, num: int, seed: int) -> list[_Speech]:
    split_id = _SPLITS.index(split)
    rng = _rng(seed, split_id, 0)
    variants = TRAIN_VARIANTS if split == "train" else VALIDATION_VARIANTS
    variant_order = rng.permutation(len(variants))
    sentence_orders = {
        lang: rng.permutation(len(SENTENCES[lang][_SENTENCE_PARTS[split]])) for lang in LANGUAGES
    }
    rates = _allocate_rates(num, rng)
    uses = dict.fromkeys(LANGUAGES, 0)
    plan = []
    for i in range(num):
        lang = LANGUAGES[i % len(LANGUAGES)]
        sentences = SENTENCES[lang][_SENTENCE_PARTS[split]]
        text = sentences[sentence_orders[lang][uses[lang] % len(sentences)]]
        uses[lang] += 1
        variant = variants[variant_order[i % len(variants)]]
        voice = _voice(lang, variant, rng)
        index = _INDEX_OFFSET[split] + i
        uid = f"demo_{lang}_{variant}_p{voice.pitch}_r{voice.rate_wpm}_{index:04d}"
        plan.append(
            _Speech(
                uid=uid,
                language=lang,
                text=text,
                voice=voice,
                sample_rate=rates[i],
                synth_seed=int(rng.integers(2**31)),
                leading_silence_s=float(rng.uniform(0.15, 0.6)),
                trailing_silence_s=float(rng.uniform(0.2, 0.8)),
                level_db=float(rng.uniform(-32.0, -20.0)),
                floor_db=float(rng.uniform(55.0, 70.0)),
            )
        )
    return plan


def _plan_noise(split: str, num: int, seed: int) -> list[_Noise]:
    split_id = _SPLITS.index(split)
    rng = _rng(seed, split_id, 1)
    kinds = [NOISE_TYPES[k] for k in rng.permutation(len(NOISE_TYPES))]
    # Blocks of all seven rates, each block shuffled: every speech rate has a noise at that rate.
    num_blocks = -(-num // len(SAMPLE_RATES))
    rates = np.concatenate([rng.permutation(SAMPLE_RATES) for _ in range(num_blocks)])[:num]
    plan = []
    for i in range(num):
        kind, fs = kinds[i % len(kinds)], int(rates[i])
        index = _INDEX_OFFSET[split] + i
        plan.append(
            _Noise(
                uid=f"demo_noise_{kind}_{fs}hz_{index:04d}",
                kind=kind,
                sample_rate=fs,
                duration_s=float(rng.uniform(5.0, 15.0)),
                peak_db=float(rng.uniform(-10.0, -1.0)),
                rng=_rng(seed, split_id, 2, i),
            )
        )
    return plan


# --- speech -------------------------------------------------------------------------------------


def _dc_block(x: np.ndarray, sample_rate: int, cutoff_hz: float = 20.0) -> np.ndarray:
    """First-order DC-blocking high-pass (zero mean first, so the filter starts settled)."""
    pole = 1.0 - 2.0 * np.pi * cutoff_hz / sample_rate
    return scipy.signal.lfilter([1.0, -1.0], [1.0, -pole], x - x.mean())


def _active_rms(x: np.ndarray, sample_rate: int) -> float:
    """RMS over 20 ms frames within 40 dB of the loudest frame."""
    frame = max(int(0.02 * sample_rate), 1)
    num = max(x.size // frame, 1)
    power = np.mean(np.reshape(x[: num * frame], (num, -1)) ** 2, axis=-1)
    active = power > power.max() * 1e-4
    return float(np.sqrt(power[active].mean())) if active.any() else 0.0


def _synthesize_speech(item: _Speech, synth: SpeechSynthesizer, seed: int) -> np.ndarray:
    """Raw eSpeak output -> trimmed, DC-free, with silences and a faint noise floor (22050 Hz)."""
    fs = ESPEAK_SAMPLE_RATE
    raw = synth.synthesize(item.text, item.voice, seed=item.synth_seed).astype(np.float64)
    loud = np.flatnonzero(np.abs(raw) > 1e-3 * np.abs(raw).max())
    speech = _dc_block(raw[loud[0] : loud[-1] + 1], fs)
    lead = int(item.leading_silence_s * fs)
    trail = int(item.trailing_silence_s * fs)
    x = np.pad(speech, (lead, trail))
    rng = _rng(seed, 3, item.synth_seed)
    floor = rng.standard_normal(x.size) * _active_rms(speech, fs) * 10.0 ** (-item.floor_db / 20.0)
    return (x + floor).astype(np.float32)


def _finish_speech(x: np.ndarray, level_db: float, sample_rate: int) -> np.ndarray:
    """Set the active RMS level (dBFS), limited to a -1 dBFS peak."""
    gain = 10.0 ** (level_db / 20.0) / max(_active_rms(x, sample_rate), 1e-9)
    gain = min(gain, 0.89 / max(float(np.abs(x).max()), 1e-9))
    return (x * gain).astype(np.float32)


# --- noise --------------------------------------------------------------------------------------


def _shaped_noise(
    num: int, sample_rate: int, exponent: float, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1 / f**exponent above 20 Hz (periodic), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(num))
    freqs = np.fft.rfftfreq(num, 1.0 / sample_rate)
    spec *= np.where(freqs >= 20.0, np.maximum(freqs, 20.0) ** (-exponent / 2.0), 0.0)
    x = np.fft.irfft(spec, n=num)
    return x / np.sqrt(np.mean(x**2))


def _hum(num: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50/60 Hz with odd-dominant harmonics, slow amplitude modulation, faint hiss."""
    t = np.arange(num) / sample_rate
    f0 = rng.choice([50.0, 60.0]) * (1.0 + rng.uniform(-0.002, 0.002))
    x = np.zeros(num)
    for k in range(1, int(min(2000.0, 0.45 * sample_rate) // f0) + 1):
        amp = k**-0.8 * rng.uniform(0.5, 1.0) * (1.0 if k % 2 else 0.3)
        x += amp * np.sin(2.0 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    depth, rate = rng.uniform(0.05, 0.3), rng.uniform(0.1, 2.0)
    x *= 1.0 + depth * np.sin(2.0 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    return x / np.sqrt(np.mean(x**2)) + 0.01 * rng.standard_normal(num)


def _clicks(num: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Random impulse train: decaying noise bursts and damped ringing over a quiet pink floor."""
    x = 0.02 * _shaped_noise(num, sample_rate, 1.0, rng)
    num_clicks = int(rng.poisson(rng.uniform(0.5, 6.0) * num / sample_rate)) + 1
    for start in rng.integers(0, num, num_clicks):
        decay_s = rng.uniform(0.0005, 0.015)
        length = min(int(6 * decay_s * sample_rate) + 1, num - start)
        t = np.arange(length) / sample_rate
        if rng.random() < 0.5:
            burst = rng.standard_normal(length)
        else:
            burst = np.sin(2 * np.pi * rng.uniform(300.0, 0.4 * sample_rate) * t)
        x[start : start + length] += np.exp(rng.normal(0.0, 0.7)) * burst * np.exp(-t / decay_s)
    return x


def _fan(num: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Fan-like noise: pink broadband + a resonance + a blade-pass tone, slowly modulated."""
    t = np.arange(num) / sample_rate
    broadband = _shaped_noise(num, sample_rate, rng.uniform(1.0, 2.0), rng)
    centre_hz = rng.uniform(150.0, min(1500.0, 0.4 * sample_rate))
    b, a = scipy.signal.iirpeak(centre_hz, rng.uniform(2.0, 8.0), fs=sample_rate)
    resonance = scipy.signal.lfilter(b, a, rng.standard_normal(num))
    resonance /= np.sqrt(np.mean(resonance**2))
    blade_hz = rng.uniform(40.0, 200.0)
    tone = sum(
        k**-1.0 * np.sin(2 * np.pi * k * blade_hz * t + rng.uniform(0, 2 * np.pi))
        for k in range(1, 4)
    )
    x = broadband + rng.uniform(0.5, 2.0) * resonance + rng.uniform(0.05, 0.4) * tone
    depth, rate = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.5)
    return x * (1.0 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))


def _babble(item: _Noise, synth: SpeechSynthesizer) -> np.ndarray:
    """4-8 talkers saying babble sentences back to back, summed at random offsets (22050 Hz)."""
    rng, fs = item.rng, ESPEAK_SAMPLE_RATE
    num = int(item.duration_s * fs)
    variants = TRAIN_VARIANTS + VALIDATION_VARIANTS
    mix = np.zeros(num)
    for _ in range(int(rng.integers(4, 9))):
        lang = LANGUAGES[int(rng.integers(len(LANGUAGES)))]
        offset = int(rng.integers(0, 2 * fs))
        parts: list[np.ndarray] = []
        while sum(p.size for p in parts) < num + offset:
            sentences = SENTENCES[lang][_SENTENCE_PARTS["babble"]]
            voice = _voice(lang, variants[int(rng.integers(len(variants)))], rng)
            text = sentences[int(rng.integers(len(sentences)))]
            speech = synth.synthesize(text, voice, seed=int(rng.integers(2**31)))
            parts += [_dc_block(speech, fs), np.zeros(int(rng.uniform(0.05, 0.4) * fs))]
        talker = np.concatenate(parts)[offset : offset + num]
        mix += talker / (np.sqrt(np.mean(talker**2)) + 1e-9) * 10.0 ** (rng.uniform(-6, 0) / 20)
    return mix.astype(np.float32)


def _procedural_noise(item: _Noise) -> np.ndarray:
    # a 5-smooth length keeps the FFT-shaped noises fast (a large prime factor costs seconds)
    num = next_fast_len(int(item.duration_s * item.sample_rate))
    fs, rng = item.sample_rate, item.rng
    if item.kind == "white":
        return rng.standard_normal(num)
    if item.kind == "pink":
        return _shaped_noise(num, fs, 1.0, rng)
    if item.kind == "brown":
        return _shaped_noise(num, fs, 2.0, rng)
    if item.kind == "hum":
        return _hum(num, fs, rng)
    if item.kind == "clicks":
        return _clicks(num, fs, rng)
    if item.kind == "fan":
        return _fan(num, fs, rng)
    raise ValueError(f"unknown noise type {item.kind!r}")


def _peak_normalise(x: np.ndarray, peak_db: float) -> np.ndarray:
    return (x * (10.0 ** (peak_db / 20.0) / np.max(np.abs(x)))).astype(np.float32)


# --- resampling -----------------------------------------------------------------------------------


# --- files --------------------------------------------------------------------------------------


def _write_lines(path: str, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in sorted(lines)))


@dataclasses.dataclass
class _SplitFiles:
    """Rows of the source lists of one split: (uid, sample_rate, path, num_samples)."""

    speech: list[tuple[str, int, str, int]] = dataclasses.field(default_factory=list)
    noise: list[tuple[str, int, str, int]] = dataclasses.field(default_factory=list)
    wind: list[tuple[str, int, str, int]] = dataclasses.field(default_factory=list)
    rir: list[tuple[str, int, str, int]] = dataclasses.field(default_factory=list)


def _write_source_lists(folder: str, files: _SplitFiles, speech: list[_Speech]) -> None:
    os.makedirs(folder, exist_ok=True)

    def scp(rows):
        return [f"{uid} {fs} {path}" for uid, fs, path, _ in rows]

    _write_lines(os.path.join(folder, "speech_sources.scp"), scp(files.speech))
    _write_lines(os.path.join(folder, "noise_scoures.scp"), scp(files.noise))  # sic, official name
    _write_lines(os.path.join(folder, "wind_noise_scoures.scp"), scp(files.wind))
    _write_lines(os.path.join(folder, "rirs.scp"), scp(files.rir))
    every = files.speech + files.noise + files.wind + files.rir
    _write_lines(os.path.join(folder, "source_length.scp"), [f"{u} {n}" for u, _, _, n in every])
    _write_lines(os.path.join(folder, "utt2spk"), [f"{s.uid} {s.uid}" for s in speech])
    _write_lines(os.path.join(folder, "text"), [f"{s.uid} {s.text}" for s in speech])
    _write_lines(os.path.join(folder, "utt2lang"), [f"{s.uid} {s.language}" for s in speech])


def _save(path: str, audio: np.ndarray, sample_rate: int, rows: list, uid: str) -> None:
    write_audio(path, audio, sample_rate)
    rows.append((uid, sample_rate, path, int(audio.shape[-1])))


# --- build --------------------------------------------------------------------------------------


def build_demo_corpus(
    out_dir: str | os.PathLike, seed: int = 0, size: str = "small", use_progress_bar: bool = True
) -> dict:
    """Build the demo corpus under out_dir (see the module docstring) -> summary dict.

    The summary has `out_dir`, `seed`, `size`, `build_time_s` and, per split ("train",
    "validation"), `sources_dir`, `num_speech`, `speech_s`, `speech_s_per_language`,
    `speech_s_per_sample_rate`, `speech_s_per_variant` (durations in seconds), `num_noise`,
    `noise_per_type`, `num_wind` and `num_rir`. Existing files of the same names are overwritten.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    start_time = time.perf_counter()
    config = SIZES[size]
    out_dir = os.path.abspath(os.fspath(out_dir))
    audio_dir = os.path.join(out_dir, "audio")
    speech = {s: _plan_speech(s, config.num_speech[k], seed) for k, s in enumerate(_SPLITS)}
    noise = {s: _plan_noise(s, config.num_noise[k], seed) for k, s in enumerate(_SPLITS)}
    files = {s: _SplitFiles() for s in _SPLITS}
    num_wind = sum(config.wind_per_rate) * len(SAMPLE_RATES)
    num_rir = sum(config.rir_per_rate) * len(SAMPLE_RATES)
    total = sum(map(len, speech.values())) + sum(map(len, noise.values())) + num_wind + num_rir
    bar = tqdm(total=total, desc="demo corpus", unit="file", disable=not use_progress_bar)

    # --- speech and noise (babble needs the synthesizer too) ---
    with SpeechSynthesizer() as synth:
        for split in _SPLITS:
            bar.set_description(f"{split} speech")
            for item in speech[split]:
                audio = _synthesize_speech(item, synth, seed)
                audio = resample_numpy(audio, ESPEAK_SAMPLE_RATE, item.sample_rate)
                audio = _finish_speech(audio, item.level_db, item.sample_rate)
                path = os.path.join(audio_dir, "speech", split, item.language, f"{item.uid}.flac")
                _save(path, audio, item.sample_rate, files[split].speech, item.uid)
                bar.update()
            bar.set_description(f"{split} noise")
            for item in noise[split]:
                if item.kind == "babble":
                    audio = resample_numpy(_babble(item, synth), ESPEAK_SAMPLE_RATE, item.sample_rate)
                else:
                    audio = _procedural_noise(item)
                audio = _peak_normalise(audio, item.peak_db)
                path = os.path.join(audio_dir, "noise", split, f"{item.uid}.wav")
                _save(path, audio, item.sample_rate, files[split].noise, item.uid)
                bar.update()

    # --- wind (official generator; gustiness ~ U[3, 10] as the recipe) and RIRs ---
    bar.set_description("wind and RIRs")
    for k, split in enumerate(_SPLITS):
        rng = _rng(seed, k, 4)
        for fs in SAMPLE_RATES:
            for i in range(config.wind_per_rate[k]):
                uid = f"wind_noise_{fs}hz_{_INDEX_OFFSET[split] + i}"
                gustiness, wind_seed = float(rng.uniform(3.0, 10.0)), int(rng.integers(2**31))
                wind = generate_wind_noise(config.wind_duration_s, fs, gustiness, wind_seed)
                path = os.path.join(audio_dir, "wind", split, f"{uid}.wav")
                _save(path, wind, fs, files[split].wind, uid)
                bar.update()
        rng = _rng(seed, k, 5)
        for fs in SAMPLE_RATES:
            for i in range(config.rir_per_rate[k]):
                rt60_ms = int(rng.integers(200, 1201))
                uid = f"demo_rir_{fs}hz_t60_{rt60_ms:04d}ms_{_INDEX_OFFSET[split] + i:04d}"
                rir = synthesize_rir(fs, rt60_ms / 1000.0, rng)
                path = os.path.join(audio_dir, "rir", split, f"{uid}.wav")
                _save(path, rir, fs, files[split].rir, uid)
                bar.update()
    bar.close()

    summary = {"out_dir": out_dir, "seed": int(seed), "size": size, "splits": {}}
    for split in _SPLITS:
        sources_dir = os.path.join(out_dir, _SOURCES_DIRS[split])
        _write_source_lists(sources_dir, files[split], speech[split])
        summary["splits"][split] = _split_summary(
            sources_dir, files[split], speech[split], noise[split]
        )
    summary["build_time_s"] = time.perf_counter() - start_time
    return summary


def _split_summary(
    sources_dir: str, files: _SplitFiles, speech: list[_Speech], noise: list[_Noise]
) -> dict:
    durations = {uid: n / fs for uid, fs, _, n in files.speech}
    per_language: dict[str, float] = {}
    per_rate: dict[int, float] = {}
    per_variant: dict[str, float] = {}
    for item in speech:
        d = durations[item.uid]
        per_language[item.language] = per_language.get(item.language, 0.0) + d
        per_rate[item.sample_rate] = per_rate.get(item.sample_rate, 0.0) + d
        per_variant[item.voice.variant] = per_variant.get(item.voice.variant, 0.0) + d
    noise_per_type: dict[str, int] = {}
    for item in noise:
        noise_per_type[item.kind] = noise_per_type.get(item.kind, 0) + 1
    return {
        "sources_dir": sources_dir,
        "num_speech": len(speech),
        "speech_s": float(sum(durations.values())),
        "speech_s_per_language": dict(sorted(per_language.items())),
        "speech_s_per_sample_rate": dict(sorted(per_rate.items())),
        "speech_s_per_variant": dict(sorted(per_variant.items())),
        "num_noise": len(noise),
        "noise_per_type": dict(sorted(noise_per_type.items())),
        "num_wind": len(files.wind),
        "num_rir": len(files.rir),
    }


def format_summary(summary: dict) -> str:
    """The summary as a text table: minutes of speech per language / rate / variant, file counts."""
    splits = summary["splits"]
    names = list(splits)
    rows: list[tuple[str, list[str]]] = []

    def minutes(key, sub=None):
        seconds = [splits[s][key] if sub is None else splits[s][key].get(sub) for s in names]
        return ["-" if value is None else f"{value / 60:.2f}" for value in seconds]

    rows.append(("speech utterances", [str(splits[s]["num_speech"]) for s in names]))
    rows.append(("speech [min]", minutes("speech_s")))
    rows.append(("speech [h]", [f"{splits[s]['speech_s'] / 3600:.3f}" for s in names]))
    for title, key in (
        ("language", "speech_s_per_language"),
        ("sampling rate", "speech_s_per_sample_rate"),
        ("voice variant", "speech_s_per_variant"),
    ):
        rows.append((f"per {title} [min]", ["" for _ in names]))
        for value in sorted({v for s in names for v in splits[s][key]}):
            label = f"{value} Hz" if key == "speech_s_per_sample_rate" else str(value)
            rows.append((f"  {label}", minutes(key, value)))
    rows.append(("noise files", [str(splits[s]["num_noise"]) for s in names]))
    for kind in NOISE_TYPES:
        rows.append((f"  {kind}", [str(splits[s]["noise_per_type"].get(kind, 0)) for s in names]))
    rows.append(("wind noise files", [str(splits[s]["num_wind"]) for s in names]))
    rows.append(("RIR files", [str(splits[s]["num_rir"]) for s in names]))
    label_width = max(len(label) for label, _ in rows) + 2
    col_width = max(12, *(len(n) + 2 for n in names))
    header = f"demo corpus {summary['out_dir']} (seed {summary['seed']}, size {summary['size']}, "
    header += f"built in {summary['build_time_s']:.1f} s)"
    lines = [header, " " * label_width + "".join(n.rjust(col_width) for n in names)]
    for label, values in rows:
        lines.append(label.ljust(label_width) + "".join(v.rjust(col_width) for v in values))
    return "\n".join(lines)


def print_summary(summary: dict) -> None:
    """Print `format_summary(summary)` to stdout."""
    print(format_summary(summary), flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="corpus size")
    args = parser.parse_args(argv)
    summary = build_demo_corpus(args.out, seed=args.seed, size=args.size)
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main()
