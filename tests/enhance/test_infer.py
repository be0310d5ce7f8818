"""`urgent_jax.enhance.infer`: official scp round trip, bucketing/padding invariance, chunked
overlap-add, bad files reported in errors.tsv, and loading from a training workdir or a converted
checkpoint directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import linen as nn

from urgent_jax import models
from urgent_jax.data.manifest import read_kv, write_kv
from urgent_jax.enhance.infer import chunk_bounds, enhance_scp, load_model_and_variables, overlap_add

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model():
    model = models.build("bsrnn", num_channels=8, num_layers=1)
    variables = nn.meta.unbox(models.init_variables(model, jax.random.PRNGKey(3)))
    return model, variables


def _speechlike(rng, n, fs):
    t = np.arange(n) / fs
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(n)
    return x.astype(np.float32)


@pytest.fixture
def recordings(tmp_path, rng):
    """wav.scp with good files at three rates (flac and wav), a corrupt, an empty and a NaN file."""
    d = tmp_path / "in"
    d.mkdir()
    entries, audio = {}, {}
    for uid, fs, seconds, ext in [("a_8k", 8000, 0.7, "flac"), ("b_16k", 16000, 1.3, "wav"),
                                  ("c_48k", 48000, 0.45, "flac"), ("d_16k", 16000, 0.9, "flac")]:
        x = _speechlike(rng, int(seconds * fs), fs)
        path = d / f"{uid}.{ext}"
        sf.write(path, x, fs, subtype="FLOAT" if ext == "wav" else "PCM_24")
        entries[uid] = str(path)
        audio[uid] = (sf.read(path, dtype="float32")[0], fs)
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00not audio")
    entries["corrupt"] = str(d / "corrupt.wav")
    nan = np.zeros(4000, np.float32)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    entries["nan"] = str(d / "nan.wav")
    entries["missing"] = str(d / "nowhere.wav")
    scp = tmp_path / "wav.scp"
    write_kv(scp, entries)
    return scp, audio


def test_round_trip_matches_direct_apply(tiny_model, recordings, tmp_path):
    model, variables = tiny_model
    scp, audio = recordings
    out = tmp_path / "out"
    summary = enhance_scp(model, variables, str(scp), str(out), batch_size=3, peak=0.0, use_progress_bar=False)
    assert summary["num_inputs"] == 7 and summary["num_written"] == 4 and summary["num_errors"] == 3
    inf = read_kv(out / "inf.scp")
    assert list(inf) == ["a_8k", "b_16k", "c_48k", "d_16k"]  # input order, bad ones left out
    apply = jax.jit(model.apply, static_argnames="sample_rate")  # eager apply costs ~5x a compile
    for uid, path in inf.items():
        assert Path(path).is_absolute() and Path(path).parent == out / "wav"
        y, fs = sf.read(path, dtype="float32")
        x, fs_in = audio[uid]
        assert fs == fs_in and y.shape == x.shape
        # the same model on the unpadded single utterance (batching and padding change nothing)
        direct = np.asarray(apply(variables, x[None], np.array([len(x)], np.int32), sample_rate=fs))[0]
        # outputs are 16-bit PCM: one quantisation step is 2**-15
        np.testing.assert_allclose(y, direct, atol=2.0**-15 + 1e-5 * max(1.0, float(np.max(np.abs(direct)))))
    errors = (out / "errors.tsv").read_text().splitlines()
    assert errors[0] == "uid\treason"
    reasons = dict(line.split("\t", 1) for line in errors[1:])
    assert set(reasons) == {"corrupt", "nan", "missing"}
    assert "corrupt.wav" in reasons["corrupt"] and "NaN" in reasons["nan"] and "nowhere.wav" in reasons["missing"]


def test_overlap_add_reconstructs_any_signal(rng):
    x = rng.standard_normal(10_000).astype(np.float32)
    for chunk, overlap in [(3000, 500), (4096, 1000), (2500, 1)]:
        bounds = chunk_bounds(len(x), chunk, overlap)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(x)
        assert all(b[0] < a[1] for a, b in zip(bounds, bounds[1:]))  # consecutive chunks overlap
        np.testing.assert_allclose(overlap_add([x[s:e] for s, e in bounds], bounds, len(x), overlap), x,
                                   atol=1e-6)


def test_long_files_are_chunked_and_joined(tiny_model, recordings, tmp_path):
    model, variables = tiny_model
    scp, audio = recordings
    out = tmp_path / "chunked"
    summary = enhance_scp(model, variables, str(scp), str(out), batch_size=4, chunk_s=0.4, overlap_s=0.1,
                          peak=0.9, use_progress_bar=False)
    assert summary["num_written"] == 4
    y, fs = sf.read(read_kv(out / "inf.scp")["b_16k"], dtype="float32")
    assert len(y) == len(audio["b_16k"][0]) and np.all(np.isfinite(y))
    assert np.max(np.abs(y)) == pytest.approx(0.9, abs=1e-3)


def test_load_from_workdir_and_converted_dir(tiny_model, tmp_path):
    import orbax.checkpoint as ocp

    from urgent_jax.models.convert import save_converted

    model, variables = tiny_model
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps(
        {"model": {"name": "bsrnn", "kwargs": {"num_channels": 8, "num_layers": 1}}}))
    mngr = ocp.CheckpointManager(str(workdir / "checkpoints"))
    mngr.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(
        {"params": variables["params"], "constants": {}, "ema_params": None, "step": np.int32(7)})))
    mngr.wait_until_finished()
    mngr.close()
    loaded_model, loaded = load_model_and_variables(str(workdir))
    assert loaded_model.num_channels == 8
    for a, b in zip(jax.tree.leaves(loaded["params"]), jax.tree.leaves(variables["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    converted = save_converted(tmp_path / "conv", variables, "bsrnn", {"num_channels": 8, "num_layers": 1})
    m2, v2 = load_model_and_variables(params_path=str(converted))
    assert m2.num_layers == 1
    for a, b in zip(jax.tree.leaves(v2["params"]), jax.tree.leaves(variables["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
        (tmp_path / "empty" / "config.json").write_text((workdir / "config.json").read_text())
        load_model_and_variables(str(tmp_path / "empty"))


def test_params_with_workdir_or_step_is_refused(tmp_path):
    # Before: --params silently won and --workdir / --step were ignored.
    for kwargs in ({"workdir": str(tmp_path / "run")}, {"step": 3}):
        with pytest.raises(ValueError, match="either --workdir .* or --params"):
            load_model_and_variables(params_path=str(tmp_path / "conv"), **kwargs)


def test_workdir_that_is_not_a_training_run(tmp_path):
    # Before: a raw "No such file or directory: .../config.json" from deep in the loader.
    with pytest.raises(FileNotFoundError, match="nosuch: not a training run.*--workdir"):
        load_model_and_variables(str(tmp_path / "nosuch"))


def test_cli_with_converted_params(tiny_model, recordings, tmp_path):
    from urgent_jax.models.convert import save_converted

    model, variables = tiny_model
    scp, _ = recordings
    converted = save_converted(tmp_path / "conv", variables, "bsrnn", {"num_channels": 8, "num_layers": 1})
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "urgent_jax.enhance.infer", f"--params={converted}",
                           f"--input_scp={scp}", f"--output_dir={out}", "--batch_size=4"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_kv(out / "inf.scp")) == 4
    assert json.loads(proc.stderr.strip().splitlines()[-1])["num_errors"] == 3


def test_zero_overlap_and_invalid_chunking(tiny_model, recordings, tmp_path, rng):
    """--overlap_s 0 joins touching chunks (it used to crash after enhancing everything, writing
    nothing); an overlap not shorter than the chunk is refused up front with the flag values."""
    x = rng.standard_normal(1000).astype(np.float32)
    bounds = chunk_bounds(len(x), 300, 0)
    np.testing.assert_array_equal(overlap_add([x[s:e] for s, e in bounds], bounds, len(x), 0), x)
    model, variables = tiny_model
    scp, audio = recordings
    out = tmp_path / "no_overlap"
    summary = enhance_scp(model, variables, str(scp), str(out), batch_size=4, chunk_s=0.4,
                          overlap_s=0.0, peak=0.9, use_progress_bar=False)
    assert summary["num_written"] == 4
    y, _ = sf.read(read_kv(out / "inf.scp")["b_16k"], dtype="float32")
    assert len(y) == len(audio["b_16k"][0]) and np.all(np.isfinite(y))
    with pytest.raises(ValueError, match="overlap_s=0.5, chunk_s=0.4"):
        enhance_scp(model, variables, str(scp), str(tmp_path / "bad"), chunk_s=0.4, overlap_s=0.5,
                    use_progress_bar=False)
    with pytest.raises(ValueError, match="overlap"):
        chunk_bounds(1000, 300, 300)
