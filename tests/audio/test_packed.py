"""Packed paths `packed:<DIR>#<uid>`: audio_info / read_audio on them equal soundfile on the
original files (lossless codecs) for whole reads and segments, missing packs / uids raise errors
naming the path, and the per-process index survives re-packing, pickling and fork."""

from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest
import soundfile as sf

from urgent_jax.audio import packed
from urgent_jax.audio.io import AudioFileError, audio_exists, audio_info, read_audio
from urgent_jax.data.pack import pack

RATES = (8000, 16000, 48000, 22050)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """uid -> path of 16-bit files (wav and flac, one stereo) and the scp listing them."""
    root = tmp_path_factory.mktemp("packed_originals")
    rng = np.random.default_rng(0)
    paths, lines = {}, []
    for i, fs in enumerate(RATES):
        n = int(fs * (0.15 + 0.05 * i))
        shape = (n, 2) if i == 2 else (n,)
        x = np.clip(0.3 * rng.standard_normal(shape), -1, 1).astype(np.float32)
        path = root / f"u{i}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, x, fs)  # 16-bit
        paths[f"utt_{i}"] = str(path)
        lines.append(f"utt_{i} {fs} {path}")
    (root / "list.scp").write_text("\n".join(lines) + "\n")
    return root, paths


@pytest.fixture(scope="module", params=packed.CODECS)
def pack_dir(request, originals):
    root, _ = originals
    out = root / f"pack_{request.param}"
    pack(root / "list.scp", out, 3, codec=request.param)
    return out


def _ref(path: str, start: int = 0, frames: int = -1) -> np.ndarray:
    """Channel 0 as soundfile reads it, [1, T]."""
    x, _ = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    return x[:, :1].T


def test_info_and_reads_equal_soundfile(pack_dir, originals):
    _, paths = originals
    for uid, path in paths.items():
        p = packed.packed_path(pack_dir, uid)
        info = sf.info(path)
        assert audio_info(p) == (info.samplerate, info.frames, 1)
        assert audio_exists(p)
        n = info.frames
        x, fs = read_audio(p)
        assert fs == info.samplerate and x.dtype == np.float32 and x.shape == (1, n)
        np.testing.assert_array_equal(x, _ref(path))
        for start, num in ((0, 100), (n // 3, n // 4), (n - 50, 200), (n + 10, 5), (7, 0)):
            seg, _ = read_audio(p, start=start, num_samples=num, first_channel=True)
            np.testing.assert_array_equal(seg, _ref(path, start, num), err_msg=f"{start} {num}")
        seg, _ = read_audio(p, start=n // 2)
        np.testing.assert_array_equal(seg, _ref(path, n // 2))
        assert packed.read_packed(p, start=-20)[0].shape == (1, 20)


def test_resampling_on_read_matches_files(pack_dir, originals):
    _, paths = originals
    p = packed.packed_path(pack_dir, "utt_2")  # the 48 kHz stereo file
    x, fs = read_audio(p, sample_rate=16000)
    ref, ref_fs = read_audio(paths["utt_2"], sample_rate=16000, first_channel=True)
    assert fs == ref_fs == 16000
    np.testing.assert_allclose(x, ref, atol=1e-6)


def test_path_syntax(tmp_path):
    p = packed.packed_path(tmp_path / "a#b", "utt_1")
    assert p == f"packed:{tmp_path}/a#b#utt_1" and packed.is_packed(p)
    assert packed.split_packed(p) == (f"{tmp_path}/a#b", "utt_1")
    assert not packed.is_packed(str(tmp_path / "x.wav"))
    assert packed.resolve_packed("packed:rel/dir#u", "/base") == "packed:/base/rel/dir#u"
    assert packed.resolve_packed(p, "/base") == p
    for bad in ("u#1", "", "a b"):
        with pytest.raises(ValueError, match="cannot be packed"):
            packed.packed_path(tmp_path, bad)
    for bad in ("packed:/d", "packed:#u", "packed:/d#"):
        with pytest.raises(packed.PackedAudioError, match="malformed"):
            packed.split_packed(bad)


def test_missing_pack_or_uid_names_the_path(pack_dir, tmp_path):
    cases = {
        packed.packed_path(pack_dir, "no_such_uid"): "no uid 'no_such_uid'",
        packed.packed_path(tmp_path / "nowhere", "utt_0"): "no pack directory",
        "packed:/no/hash/here": "malformed",
    }
    for p, reason in cases.items():
        assert not audio_exists(p)
        for fn in (audio_info, read_audio):
            with pytest.raises(AudioFileError, match=reason) as e:
                fn(p)
            assert str(e.value).startswith(f"{p}: ")


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # the child runs no JAX
def test_index_cache_reload_pickle_and_fork(originals, tmp_path):
    root, paths = originals
    out = tmp_path / "p"
    pack(root / "list.scp", out, 2, codec="float32")
    p = packed.packed_path(out, "utt_1")
    first, _ = read_audio(p)
    assert packed.load_index(out) is packed.load_index(str(out))  # cached
    # Re-packing the directory with other audio under the same uid: the next read sees it.
    (tmp_path / "other.scp").write_text(f"utt_1 {paths['utt_0']}\n")
    pack(tmp_path / "other.scp", out, 1, codec="pcm16")
    again, fs = read_audio(p)
    assert fs == RATES[0]
    np.testing.assert_array_equal(again, _ref(paths["utt_0"]))
    assert packed.load_index(out).uids == ["utt_1"]
    with pytest.raises(TypeError, match="per process"):
        pickle.dumps(packed.load_index(out))
    # A forked child inherits the parent's opened readers and must open its own.
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply_async(read_audio, (p,)).get(timeout=60)
    np.testing.assert_array_equal(child[0], again)
    assert first.shape == (1, int(RATES[1] * 0.2))
