"""DNSMOS: the ONNX reader, both networks == onnxruntime, scores == the onnxruntime + librosa + soxr
pipeline of REFERENCE.md §4.2 on real speech, padded batches == single examples, jit."""

from __future__ import annotations

import struct

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import onnxruntime as ort
import pytest
import soxr

from urgent_jax.metrics import dnsmos as dn
from urgent_jax.metrics import onnx_weights
from urgent_jax.metrics.onnx_weights import parse_onnx, read_onnx, speechmos_model_path

PRIMARY, P808 = "sig_bak_ovr.onnx", "model_v8.onnx"
SCORES = ("sig", "bak", "ovrl", "p808")
SCORE_TOL = 0.01  # |Δ| per score vs the reference pipeline (soxr vs our resampler included)
RAW_TOL = 1e-4  # |Δ| on raw network outputs vs onnxruntime

# §4.2 calibration, highest power first, written out here independently of the module.
POLY = {
    "sig": [-0.08397278, 1.22083953, 0.0052439],
    "bak": [-0.13166888, 1.60915514, -0.39604546],
    "ovrl": [-0.06766283, 1.11546468, 0.04602535],
}


# --- the ONNX reader ---


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1  # negative int64 -> 10-byte two's complement
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(number: int, value: int | bytes | float) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    return _varint(number << 3) + _varint(value)


def test_reader_decodes_the_wire_format():
    """A hand-encoded ModelProto: packed / unpacked dims, float / int64 / raw data, attributes."""
    float_tensor = (  # dims unpacked, float_data packed
        _field(1, 2) + _field(1, 3) + _field(2, 1) + _field(8, b"w")
        + _field(4, struct.pack("<6f", *range(6)))
    )  # fmt: skip
    int_tensor = (  # dims packed, int64_data packed with a negative value
        _field(1, _varint(3)) + _field(2, 7) + _field(8, b"shape")
        + _field(7, b"".join(_varint(v) for v in (-1, 900, 160)))
    )  # fmt: skip
    raw_tensor = _field(2, 1) + _field(8, b"scalar") + _field(9, struct.pack("<f", 2.5))
    attrs = [
        _field(1, b"alpha") + _field(20, 1) + _field(2, 0.25),
        _field(1, b"axis") + _field(20, 2) + _field(3, -2),
        _field(1, b"pads") + _field(20, 7) + _field(8, b"".join(_varint(v) for v in (1, 0, 1, 0))),
        _field(1, b"mode") + _field(20, 3) + _field(4, b"VALID"),
        _field(1, b"value") + _field(20, 4) + _field(5, raw_tensor),
    ]
    node = _field(1, b"x") + _field(1, b"w") + _field(2, b"y") + _field(3, b"n0")
    node += _field(4, b"Conv") + b"".join(_field(5, a) for a in attrs)
    shape = _field(2, _field(1, _field(2, b"N")) + _field(1, _field(1, 7)))
    value_info = _field(1, b"x") + _field(2, _field(1, _field(1, 1) + shape))
    graph = (
        _field(1, node) + _field(5, float_tensor) + _field(5, int_tensor) + _field(5, raw_tensor)
        + _field(11, value_info) + _field(12, _field(1, b"y"))
    )  # fmt: skip
    model = _field(1, 7) + _field(8, _field(2, 12)) + _field(7, graph)

    parsed = parse_onnx(model)
    w = parsed.initializers["w"]
    np.testing.assert_array_equal(w, np.arange(6).reshape(2, 3))
    assert w.dtype == np.float32
    np.testing.assert_array_equal(parsed.initializers["shape"], [-1, 900, 160])
    assert parsed.initializers["shape"].dtype == np.int64
    assert parsed.initializers["scalar"].shape == () and parsed.initializers["scalar"] == 2.5
    assert parsed.opset == {"": 12}
    assert [(v.name, v.elem_type, v.shape) for v in parsed.inputs] == [("x", 1, ("N", 7))]
    assert [v.name for v in parsed.outputs] == ["y"]
    (n,) = parsed.nodes
    assert (n.op_type, n.name, n.inputs, n.outputs) == ("Conv", "n0", ("x", "w"), ("y",))
    assert n.attributes["alpha"] == 0.25 and n.attributes["axis"] == -2
    assert n.attributes["pads"] == [1, 0, 1, 0] and n.attributes["mode"] == b"VALID"
    assert n.attributes["value"] == np.float32(2.5)


def _initializer_table(path) -> dict[str, tuple[tuple[int, ...], int, int]]:
    """name -> (dims, data_type, value count), decoded with protobuf's generic wire parser."""
    from google.protobuf import empty_pb2
    from google.protobuf.unknown_fields import UnknownFieldSet

    def fields(data: bytes):
        msg = empty_pb2.Empty()
        msg.ParseFromString(data)
        return list(UnknownFieldSet(msg))

    (graph,) = [f.data for f in fields(path.read_bytes()) if f.field_number == 7]
    table = {}
    for tensor in (f.data for f in fields(graph) if f.field_number == 5):
        fs = fields(tensor)
        assert all(f.wire_type == 0 for f in fs if f.field_number == 1)  # unpacked dims here
        dims = tuple(f.data for f in fs if f.field_number == 1)
        (data_type,) = [f.data for f in fs if f.field_number == 2]
        (name,) = [f.data.decode() for f in fs if f.field_number == 8]
        count = 0
        for f in fs:
            if f.field_number == 9:  # raw_data
                count += len(f.data) // {1: 4, 7: 8}[data_type]
            elif f.field_number == 4:  # float_data: packed run or one fixed32
                count += len(f.data) // 4 if f.wire_type == 2 else 1
            elif f.field_number == 7:  # int64_data: packed run (one final byte per varint) or one
                count += sum(b < 0x80 for b in f.data) if f.wire_type == 2 else 1
        table[name] = (dims, data_type, count)
    return table


@pytest.mark.parametrize("filename", [PRIMARY, P808])
def test_reader_parses_every_initializer(filename):
    path = speechmos_model_path(filename)
    graph = read_onnx(path)
    expected = _initializer_table(path)
    assert len(graph.initializers) == len(expected) == (35 if filename == PRIMARY else 16)
    dtypes = {1: np.float32, 7: np.int64}
    for name, (dims, data_type, count) in expected.items():
        arr = graph.initializers[name]
        assert arr.shape == dims and arr.dtype == dtypes[data_type] and arr.size == count, name
        assert np.all(np.isfinite(arr)), name
    session = ort.InferenceSession(str(path))
    assert [(v.name, list(v.shape)) for v in graph.inputs] == [
        (v.name, v.shape) for v in session.get_inputs()
    ]
    assert [v.name for v in graph.outputs] == [v.name for v in session.get_outputs()]
    ops = {
        PRIMARY: "Add Concat Conv Div Log MatMul Max MaxPool Mul Pow ReduceMax Relu Reshape Slice "
        "Sqrt Transpose Unsqueeze",
        P808: "Add Conv MatMul MaxPool ReduceMax Relu Transpose Unsqueeze",
    }[filename]
    assert graph.op_types == tuple(ops.split())


def test_missing_speechmos_says_how_to_install(monkeypatch):
    monkeypatch.setattr(onnx_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps speechmos==0.0.1.1"):
        speechmos_model_path(PRIMARY)


# --- the networks ---


@pytest.fixture(scope="module")
def sessions():
    opts = ort.SessionOptions()
    return tuple(
        ort.InferenceSession(str(speechmos_model_path(f)), opts, providers=["CPUExecutionProvider"])
        for f in (PRIMARY, P808)
    )


@pytest.fixture(scope="module")
def params():
    return dn.load_dnsmos_params()


def test_networks_match_onnxruntime(params, sessions, noizeus_pair):
    primary, p808 = sessions
    rng = np.random.default_rng(0)
    clean, noisy, _ = noizeus_pair
    audio = np.stack([noisy[: dn.SEGMENT_SAMPLES], 0.1 * rng.standard_normal(dn.SEGMENT_SAMPLES)])
    audio = audio.astype(np.float32)
    mel = rng.uniform(-1.0, 1.0, (2, dn.NUM_FRAMES, dn.P808_N_MELS)).astype(np.float32)
    ours = jax.jit(dn.primary_net)(params, audio)
    np.testing.assert_allclose(ours, primary.run(None, {"input_1": audio})[0], rtol=0, atol=RAW_TOL)
    ours = jax.jit(dn.p808_net)(params, mel)
    np.testing.assert_allclose(ours, p808.run(None, {"input_1": mel})[0], rtol=0, atol=RAW_TOL)


# --- scores vs the reference pipeline ---


def reference_dnsmos(x: np.ndarray, sample_rate: int, sessions) -> dict[str, np.ndarray]:
    """§4.2 with onnxruntime, librosa and soxr HQ: per-segment raw outputs and the four scores."""
    primary, p808 = sessions
    x = np.asarray(x, np.float32)
    if sample_rate != 16000:
        x = soxr.resample(x, sample_rate, 16000, "HQ")
    while len(x) < 144160:
        x = np.concatenate([x, x])
    count = int(np.floor(len(x) / 16000) - 9.01) + 1
    segments = np.stack([x[k * 16000 : k * 16000 + 144160] for k in range(count)])
    raw = primary.run(None, {"input_1": segments})[0]
    mels = [
        librosa.feature.melspectrogram(y=s[:-160], sr=16000, n_fft=321, hop_length=160, n_mels=120)
        for s in segments
    ]
    feats = np.stack([((librosa.power_to_db(m, ref=np.max) + 40) / 40).T for m in mels])
    mos = p808.run(None, {"input_1": feats.astype(np.float32)})[0][:, 0]
    out = {name: np.mean(np.polyval(POLY[name], raw[:, i])) for i, name in enumerate(POLY)}
    return dict(out, p808=np.mean(mos), raw=raw, raw_p808=mos)


def _pad(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(c) for c in clips])
    batch = np.zeros((len(clips), max(lengths.max(), 1)), np.float32)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    return batch, lengths


@pytest.fixture(scope="module")
def clips16(shared_data, noizeus_pair) -> dict[str, np.ndarray]:
    import soundfile as sf

    clean, noisy, _ = noizeus_pair
    long, _ = sf.read(shared_data / "noizeus" / "sp05_casino_sn-5.wav", dtype="float32")
    return {
        "clean": clean,  # 12.3 s: 3 segments
        "noisy": noisy,
        "short": noisy[: 5 * 16000],  # 5 s: doubled to 10 s, 1 segment
        "long": long[:200000],  # 12.5 s: 3 segments (the -5 dB pair)
    }


@pytest.fixture(scope="module")
def scores16(clips16, params):
    """Our per-segment raw outputs and scores for the 16 kHz clips, one padded batch."""
    batch, lengths = _pad(list(clips16.values()))
    max_segs = dn.required_segments(lengths, 16000)
    raw_fn = jax.jit(dn.dnsmos_raw, static_argnums=(3, 4))
    raw, valid = raw_fn(params, batch, lengths, 16000, max_segs)
    scores = dn.segment_mean(raw, valid)  # what dnsmos() returns, without a second compile
    return np.asarray(raw), np.asarray(valid), {k: np.asarray(v) for k, v in scores.items()}


def test_16k_scores_and_raw_outputs_match_reference(clips16, scores16, sessions):
    raw, valid, scores = scores16
    for i, (name, clip) in enumerate(clips16.items()):
        ref = reference_dnsmos(clip, 16000, sessions)
        count = len(ref["raw"])
        assert valid[i].sum() == count == dn.num_segments(len(clip)), name
        ours = raw[i, :count]
        np.testing.assert_allclose(ours[:, :3], ref["raw"], rtol=0, atol=RAW_TOL, err_msg=name)
        np.testing.assert_allclose(ours[:, 3], ref["raw_p808"], rtol=0, atol=RAW_TOL, err_msg=name)
        for key in SCORES:
            assert abs(scores[key][i] - ref[key]) <= SCORE_TOL, (name, key, scores[key][i])
    assert [dn.num_segments(len(c)) for c in clips16.values()] == [3, 3, 1, 3]


@pytest.mark.parametrize("sample_rate", [8000, 48000])
def test_resampled_scores_match_reference(clips16, params, sessions, sample_rate):
    """Clean and noisy (9.5 s, one segment) at another rate, plus an empty example -> NaN."""
    clips = [clips16[k][:152000] for k in ("clean", "noisy")]
    clips = [soxr.resample(c, 16000, sample_rate, "HQ") for c in clips]
    batch, lengths = _pad([*clips, np.zeros(0, np.float32)])
    max_segs = dn.required_segments(lengths, sample_rate)
    assert max_segs == 1
    scores = dn.dnsmos(batch, lengths, sample_rate, params=params, max_segs=max_segs)
    for i, clip in enumerate(clips):
        ref = reference_dnsmos(clip, sample_rate, sessions)
        for key in SCORES:
            assert abs(float(scores[key][i]) - ref[key]) <= SCORE_TOL, (i, key)
    assert all(np.isnan(float(scores[key][2])) for key in SCORES)


def test_speechmos_package_agrees(clips16, scores16):
    """speechmos' own DNSMOS wrapper (onnxruntime, same ONNX files) on the noisy 16 kHz clip."""
    speechmos_dnsmos = pytest.importorskip("speechmos.dnsmos")  # imports `requests`, runs offline
    out = speechmos_dnsmos.run(clips16["noisy"], 16000)
    ours = {k: float(v[1]) for k, v in scores16[2].items()}
    theirs = {key: out[f"{key}_mos"] for key in SCORES}
    for key in SCORES:
        assert abs(ours[key] - theirs[key]) <= SCORE_TOL, (key, ours[key], theirs[key])


# --- segmentation, batching, jit ---


def _reference_count(n):
    """The reference's doubling and count, vectorised over lengths n >= 1."""
    x = np.array(n, dtype=np.int64)
    while np.any(x < 144160):
        x = np.where(x < 144160, 2 * x, x)
    return (np.floor(x / 16000) - 9.01).astype(np.int64) + 1


def test_segment_counts():
    lengths = [1, 9010, 18019, 18020, 36039, 64000, 72079, 72080, 144159, 144160, 176000, 480123]
    expected = _reference_count(lengths).tolist()
    assert [dn.num_segments(n) for n in lengths] == expected
    assert np.asarray(dn._segment_counts(jnp.asarray(lengths))).tolist() == expected
    for total in (1, 5000, 64000, 100000, 150000, 300000):
        assert dn.max_segments(total) == _reference_count(np.arange(1, total + 1)).max()
    assert dn.required_segments([64000, 0], 16000) == 7
    assert dn.required_segments([3 * 64000], 48000) == 7


def test_padded_batch_equals_single_examples_and_jit(clips16, params):
    a, b = clips16["short"], clips16["noisy"][16000:64000]  # 5 s (1 segment), 3 s (3 segments)
    batch, lengths = _pad([a, b])
    padded = dn.dnsmos(batch, lengths, 16000, params=params, max_segs=3)  # a: 2 invalid segments
    single_a = dn.dnsmos(a[None], [len(a)], 16000, params=params)  # default: provision 9 segments

    @jax.jit
    def score_b(x, n):
        return dn.dnsmos(x, n, 16000, params=params, max_segs=3)

    single_b = score_b(jnp.asarray(b[None]), jnp.asarray([len(b)]))
    for key in SCORES:
        np.testing.assert_allclose(padded[key], [single_a[key][0], single_b[key][0]], atol=1e-4)
    with pytest.raises(ValueError, match="need 3 segments"):
        dn.dnsmos(b[None], [len(b)], 16000, params=params, max_segs=2)


def test_shortcuts_equal_full_evaluation(clips16, params):
    """The two shortcuts against one full evaluation of the same batch. Periodic shared layers:
    clips of a multiple of 160 samples (16 kHz) reuse them over one period. Repeated segments: a
    4 s clip repeats every 4 segments, a 2 s clip every 2, so only segments 0-3 of 7 are scored.
    The third clip (70001 samples) fits neither: its uncovered outputs are NaN, never wrong."""
    clips = [clips16["noisy"][:64000], clips16["clean"][:32000], clips16["noisy"][:70001]]
    batch, lengths = _pad(clips)
    assert dn.front_frames_needed(lengths[:2], 16000) == 450  # 400 + 8 frames, rounded up
    assert dn.front_frames_needed(lengths, 16000) is None  # 70001 is not a multiple of 160
    assert dn.front_frames_needed([3 * 64000, 0], 48000) == 450
    assert dn.front_frames_needed([64001 * 3], 48000) is None
    assert dn.distinct_segments_needed(lengths[:2], 16000) == 4
    assert dn.distinct_segments_needed(lengths, 16000) > 4  # 70001 repeats later, if at all
    assert dn.distinct_segments_needed([36001], 16000) is None  # 9 distinct of 9
    assert dn.distinct_segments_needed([3 * 64000], 48000) == 4
    assert dn.distinct_segments_needed([5 * 16000], 16000) is None  # 1 segment
    raw_fn = jax.jit(dn.dnsmos_raw, static_argnums=(3, 4, 5, 6, 7))
    full, valid = raw_fn(params, batch, lengths, 16000, 7, 1, None, None)
    periodic, valid_periodic = raw_fn(params, batch, lengths, 16000, 7, 1, 450, None)
    np.testing.assert_array_equal(valid, valid_periodic)
    np.testing.assert_allclose(periodic[:2], full[:2], rtol=0, atol=1e-5)
    assert np.all(np.isnan(periodic[2, :, :3])) and np.all(np.isfinite(periodic[2, :, 3]))
    distinct, valid_distinct = raw_fn(params, batch, lengths, 16000, 7, 1, None, 4)
    np.testing.assert_array_equal(valid, valid_distinct)
    np.testing.assert_allclose(distinct[:2], full[:2], rtol=0, atol=1e-5)
    np.testing.assert_allclose(distinct[2, :4], full[2, :4], rtol=0, atol=1e-5)
    assert np.all(np.isnan(distinct[2, 4:]))  # not covered: NaN, never a wrong copy
    ours = dn.dnsmos(batch[:2], lengths[:2], 16000, params=params, max_segs=7)  # both shortcuts
    expected = dn.segment_mean(full[:2], valid[:2])
    for key in SCORES:
        np.testing.assert_allclose(ours[key], expected[key], rtol=0, atol=1e-5)
