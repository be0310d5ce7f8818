"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS: the two DNSMOS networks in jax (REFERENCE.md §4.2).

Weights come from the ONNX files of the `speechmos` wheel, read by `onnx_weights` (no `onnx`):

- primary model `dnsmos_models/sig_bak_ovr.onnx`: raw 16 kHz segment [N, 144160] -> raw (SIG, BAK,
  OVRL). The graph frames the segment itself (900 frames of 320 samples, hop 160, no centring; the
  window is folded into a DFT-as-convolution kernel), takes log10(max(|X|^2, 1e-12)) and runs a CNN.
- P.808 model `dnsmos_models/model_v8.onnx`: mel features [N, 900, 120] -> MOS, a smaller CNN.

Both CNNs are chains of Conv 3x3 (pad 1) / Relu / MaxPool 2x2, a global max and three dense
layers; `_layer_chain` rebuilds the chain from the ONNX node list, checking every attribute it
relies on, and we run it channels-last.

Scoring (ESPnet / speechmos): resample to 16 kHz; double short audio until it has >= 144160 samples
(§6.18); segments of 144160 samples every 16000, int(floor(L / 16000) - 9.01) + 1 of them; per
segment the primary model on the raw samples and the P.808 model on the mel features of
segment[:-160]; calibration polynomials on the raw primary scores; mean over segments.

Speed: segments overlap by 8.01 s and start on the primary model's frame grid (every 100 frames), so
its four full-resolution conv layers (98% of its work) run once over all frames of the repeated
signal; only the 4 frames at each segment border, which see that segment's zero padding, are redone
per segment from 8-frame patches (convolutions valid inside the patch, zero-padded at the segment's
edge). The first conv after the first pool is shared the same way (4 outputs per border redone).
This equals per-segment evaluation up to float rounding. The
P.808 model cannot share work that way: each segment's features are normalised by that segment's
maximum and clipped 80 dB below it, so they differ between segments from the first layer on.
Repeated (short) clips get two exact shortcuts, chosen by `dnsmos` from host lengths as static
arguments of `dnsmos_raw` (one compile per value): if the 16 kHz length n is a multiple of 160
samples, the frames repeat every n / 160, so the shared layers run over one period plus 8 frames
(`front_frames_needed`: 450 of 1500 frames for a 4 s clip); segment k equals segment k mod
n / gcd(n, 16000), so only the distinct ones are scored (`distinct_segments_needed`: 4 of 7 for a
4 s clip). Both reuse results computed from identical inputs, not approximations; other lengths
take the general path. On a shared 2-core CPU, 16 x 4 s clips score ~4x faster with them (about
10x speechmos + onnxruntime, experiments/benchmarks/metrics.py). Both networks' first layer (one
input channel) runs as nine broadcast multiply-adds (`_conv`).

Resampling uses our Kaiser resampler with a soxr-HQ-like response (pass band 0.9135, 130 dB) in
place of soxr HQ; on NOIZEUS speech at 8 / 22.05 / 48 kHz scores stay within 0.003 of the soxr
pipeline. The primary model sees log10 power down to 1e-12, so it hears the resampler's stop band:
with our default filter (0.9, 85 dB) SIG moves by up to 0.04.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from urgent_jax.audio.levels import spectrogram_to_db
from urgent_jax.audio.resample import resample
from urgent_jax.audio.spectral import mel_filterbank
from urgent_jax.audio.stft import stft
from urgent_jax.metrics.conv import conv3x3
from urgent_jax.metrics.onnx_weights import OnnxGraph, OnnxNode, read_onnx, speechmos_model_path

SAMPLE_RATE = 16000  # Hz, the models' rate
SEGMENT_SAMPLES = 144160  # int(9.01 * 16000): one segment
SEGMENT_HOP = 16000  # samples between segment starts (1 s)
FRAME_HOP = 160  # samples, both models' frame hop
NUM_FRAMES = 900  # frames per segment, both models
SEGMENT_FRAME_HOP = SEGMENT_HOP // FRAME_HOP  # 100 primary-model frames between segment starts
P808_N_FFT = 321  # librosa n_fft = frame_size + 1
P808_N_MELS = 120

# Non-personalised calibration polynomials, highest power first (raw score -> MOS).
CALIBRATION: dict[str, tuple[float, float, float]] = {
    "sig": (-0.08397278, 1.22083953, 0.0052439),
    "bak": (-0.13166888, 1.60915514, -0.39604546),
    "ovrl": (-0.06766283, 1.11546468, 0.04602535),
}

# Our resampler tuned to soxr "HQ" (pass band to ~91.3% of the lower Nyquist, steep stop band at
# Nyquist): on speech and white noise at 8 / 22.05 / 48 kHz these settings leave -64 dB (noise) and
# -82 dB (speech) of difference to soxr; the default filter (0.9, 85 dB) moves SIG by up to 0.04.
_RESAMPLE_KWARGS = dict(passband=0.9135, stopband=1.0, attenuation_db=130.0)

# ("conv", w [3, 3, I, O], b [O]) | ("relu",) | ("pool",) | ("gmax",) | ("dense", w [I, O], b [O])
Layer = tuple[Any, ...]


# --- weights ---


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class DnsmosParams:
    """Both networks' weights (a pytree of jnp arrays; the layer structure is static)."""

    dft: jax.Array  # [320, 322]: frame -> (re_0..re_160, im_0..im_160), window included
    front: tuple[Layer, ...]  # primary: full-resolution conv/relu layers before the first pool
    back: tuple[Layer, ...]  # primary: from the first pool to the (SIG, BAK, OVRL) output
    p808: tuple[Layer, ...]  # P.808: whole chain, input [N, 900, 120, 1]

    def tree_flatten(self) -> tuple[tuple[Any, ...], tuple[tuple[str, ...], ...]]:
        chains = (self.front, self.back, self.p808)
        arrays = tuple(tuple(layer[1:] for layer in chain) for chain in chains)
        kinds = tuple(tuple(layer[0] for layer in chain) for chain in chains)  # static
        return (self.dft, arrays), kinds

    @classmethod
    def tree_unflatten(cls, kinds: tuple[tuple[str, ...], ...], children: Any) -> DnsmosParams:
        dft, arrays = children
        chains = (
            tuple((k, *a) for k, a in zip(chain_kinds, chain_arrays))
            for chain_kinds, chain_arrays in zip(kinds, arrays)
        )
        return cls(dft, *chains)



def _attr(node: OnnxNode, name: str, expected: Any) -> None:
    """Check one node attribute (absent = the expected default)."""
    value = node.attributes.get(name, expected)
    if isinstance(value, bytes):
        value = value.decode()
    if value != expected:
        raise ValueError(f"{node.op_type} {node.name!r}: {name}={value!r}, expected {expected!r}")


def _layer_chain(graph: OnnxGraph, start: str) -> tuple[list[Layer], str]:
    """The CNN chain from tensor `start` ([N, H, W], before Unsqueeze) -> (layers, last tensor).

    Accepts exactly the patterns of the DNSMOS graphs: Unsqueeze(3) + Transpose(NHWC -> NCHW),
    Conv 3x3 / pad 1 / stride 1, Relu, MaxPool 2x2 / stride 2 / no pad, Transpose(NCHW -> NHWC) +
    ReduceMax over (H, W), MatMul + Add.
    """
    consumers: dict[str, list[OnnxNode]] = {}
    for node in graph.nodes:
        for name in node.inputs:
            consumers.setdefault(name, []).append(node)
    init = graph.initializers
    layers: list[Layer] = []
    current = start
    while True:
        nodes = consumers.get(current, [])
        if not nodes:
            return layers, current
        if len(nodes) != 1:
            raise ValueError(f"tensor {current!r} feeds {len(nodes)} nodes; expected a chain")
        node = nodes[0]
        op = node.op_type
        if op == "Unsqueeze":
            _attr(node, "axes", [3])
        elif op == "Transpose" and node.attributes["perm"] == [0, 3, 1, 2]:
            pass  # we stay channels-last
        elif op == "Transpose" and node.attributes["perm"] == [0, 2, 3, 1]:
            (reduce,) = consumers[node.outputs[0]]
            if reduce.op_type != "ReduceMax":
                raise ValueError(f"unexpected {reduce.op_type} after NHWC transpose")
            _attr(reduce, "axes", [1, 2])
            _attr(reduce, "keepdims", 0)
            layers.append(("gmax",))
            node = reduce
        elif op == "Conv":
            for name, value in [
                ("kernel_shape", [3, 3]),
                ("pads", [1, 1, 1, 1]),
                ("strides", [1, 1]),
                ("dilations", [1, 1]),
                ("group", 1),
                ("auto_pad", "NOTSET"),
            ]:
                _attr(node, name, value)
            w = init[node.inputs[1]].astype(np.float32)  # [O, I, kh, kw]; kh = time, kw = freq
            b = init[node.inputs[2]].astype(np.float32)
            layers.append(("conv", np.transpose(w, (2, 3, 1, 0)), b))
        elif op == "Relu":
            layers.append(("relu",))
        elif op == "MaxPool":
            _attr(node, "kernel_shape", [2, 2])
            _attr(node, "strides", [2, 2])
            _attr(node, "ceil_mode", 0)
            if node.attributes.get("pads", [0, 0, 0, 0]) != [0, 0, 0, 0]:
                raise ValueError(f"MaxPool {node.name!r} is padded")
            layers.append(("pool",))
        elif op == "MatMul":
            (add,) = consumers[node.outputs[0]]
            if add.op_type != "Add":
                raise ValueError(f"MatMul {node.name!r} is followed by {add.op_type}, not Add")
            w = init[node.inputs[1]].astype(np.float32)
            b = init[add.inputs[1] if add.inputs[0] == node.outputs[0] else add.inputs[0]]
            layers.append(("dense", w, b.astype(np.float32)))
            node = add
        else:
            raise ValueError(f"unsupported op {op} ({node.name!r}) in the DNSMOS chain")
        current = node.outputs[0]


def _primary_dft(graph: OnnxGraph) -> tuple[np.ndarray, str]:
    """Check the primary model's framing / DFT / log-power front end -> (dft [320, 322], output)."""
    init = graph.initializers
    by_op: dict[str, list[OnnxNode]] = {}
    for node in graph.nodes:
        by_op.setdefault(node.op_type, []).append(node)
    # Framing: samples [0, 144000) and [160, 144160) as [900, 160] each, concatenated -> [900, 320].
    starts = sorted(int(init[n.inputs[1]][1]) for n in by_op["Slice"])
    ends = sorted(int(init[n.inputs[2]][1]) for n in by_op["Slice"])
    shapes = [init[n.inputs[1]].tolist() for n in by_op["Reshape"]]
    if starts != [0, FRAME_HOP] or ends[0] != NUM_FRAMES * FRAME_HOP:
        raise ValueError(f"unexpected primary-model framing: starts {starts}, ends {ends}")
    if shapes != [[-1, NUM_FRAMES, FRAME_HOP]] * 2:
        raise ValueError(f"unexpected primary-model frame reshape {shapes}")
    kernels = {}
    for node in by_op["Conv"]:
        k = init[node.inputs[1]]
        if k.ndim == 3:  # [161, 320, 1] DFT kernels, named ...stft-real / ...stft-imag
            kernels["imag" if "imag" in node.inputs[1] else "real"] = k[:, :, 0]
    if len(by_op["Log"]) != 1:
        raise ValueError("primary model: expected one Log")
    (pow_,) = by_op["Pow"]
    (max_,) = by_op["Max"]
    (div,) = by_op["Div"]
    if float(init[pow_.inputs[1]]) != 2.0 or not math.isclose(
        float(init[div.inputs[1]]), math.log(10.0), rel_tol=1e-6
    ):
        raise ValueError("primary model: expected log10 of |X|^2")
    floor = float(next(init[i] for i in max_.inputs if i in init))
    if not math.isclose(floor, 1e-12, rel_tol=1e-6):
        raise ValueError(f"primary model: power floor {floor}, expected 1e-12")
    dft = np.concatenate([kernels["real"].T, kernels["imag"].T], axis=1).astype(np.float32)
    return dft, div.outputs[0]


@functools.lru_cache(maxsize=4)
def load_dnsmos_params(
    primary_path: str | Path | None = None, p808_path: str | Path | None = None
) -> DnsmosParams:
    """Weights of both networks, from the speechmos wheel unless local .onnx paths are given."""
    primary = read_onnx(primary_path or speechmos_model_path("sig_bak_ovr.onnx"))
    p808 = read_onnx(p808_path or speechmos_model_path("model_v8.onnx"))
    dft, log_power = _primary_dft(primary)
    layers, end = _layer_chain(primary, log_power)
    if end != primary.outputs[0].name:
        raise ValueError("primary model chain does not reach the graph output")
    first_pool = next(i for i, layer in enumerate(layers) if layer[0] == "pool")
    p808_layers, end = _layer_chain(p808, p808.inputs[0].name)
    if end != p808.outputs[0].name:
        raise ValueError("P.808 model chain does not reach the graph output")

    # numpy leaves: the cached parameters may be first loaded inside a jit trace (no tracers kept)
    def to_jnp(chain: list[Layer]) -> tuple[Layer, ...]:
        return tuple((layer[0], *(np.asarray(a) for a in layer[1:])) for layer in chain)

    return DnsmosParams(
        dft=np.asarray(dft, np.float32),
        front=to_jnp(layers[:first_pool]),
        back=to_jnp(layers[first_pool:]),
        p808=to_jnp(p808_layers),
    )


# --- networks ---


def _conv(x: jax.Array, w: jax.Array, b: jax.Array, time_pad=(1, 1)) -> jax.Array:
    """3x3 convolution, zero padding 1, channels-last: [N, H, W, I] -> [N, H, W, O].

    `time_pad` (zeros before, after on the H axis) other than (1, 1) gives the valid part of a
    patch cut from a longer sequence: H + sum(time_pad) - 2 output frames. Both networks' first
    layer (one input channel) runs as nine broadcast multiply-adds (conv3x3's few-channel path).
    """
    # Winograd F(6, 3) along time (metrics/conv.py) on every layer with >= 32 input channels but
    # the few-frame border patches. In the whole network, per clip on 2 cores: F(4, 3) on the 32-
    # and 64-channel layers (it made the 128-channel one slower) -> F(6, 3) there ~3% -> F(6, 3)
    # on the 128-channel one too, another ~10% (3-6 s clips 450 -> 402 ms, 4 s 173 -> 162 ms).
    winograd = 6 if w.shape[2] >= 32 and x.shape[1] >= 16 else 0
    y = conv3x3(x, w, time_pad=time_pad, precision=lax.Precision.HIGHEST, winograd=winograd)
    return y + b


def _edge_outputs(chain: tuple[Layer, ...], left: jax.Array, right: jax.Array):
    """The outputs of a conv/relu `chain` next to a zero-padded sequence's start and end, from its
    first and last frames (left, right [M, width + r, W, C], r = the chain's 3x3 convs): `width`
    frames each, from convolutions that are valid inside and zero-padded at that edge."""
    return _apply(chain, left, time_pad=(1, 0)), _apply(chain, right, time_pad=(0, 1))


def _pool(x: jax.Array) -> jax.Array:
    """MaxPool 2x2, stride 2, floor: [N, H, W, C] -> [N, H // 2, W // 2, C].

    As maxima of strided slices, which XLA:CPU fuses with the convolution's ReLU; a reduce_window
    after a convolution made the P.808 network twice as slow (2 cores, per segment: 15.5 -> 7.3 ms).
    """
    x = x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]
    rows = jnp.maximum(x[:, 0::2], x[:, 1::2])
    return jnp.maximum(rows[:, :, 0::2], rows[:, :, 1::2])


def _apply(layers: tuple[Layer, ...], x: jax.Array, time_pad=(1, 1)) -> jax.Array:
    """Run a layer chain on channels-last input [..., H, W, C] (leading axes are batch);
    `time_pad` goes to every convolution (see `_conv`)."""
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    for layer in layers:
        if layer[0] == "conv":
            x = _conv(x, layer[1], layer[2], time_pad)
        elif layer[0] == "relu":
            x = jnp.maximum(x, 0.0)
        elif layer[0] == "pool":
            x = _pool(x)
        elif layer[0] == "gmax":
            x = jnp.max(x, axis=(1, 2))
        elif layer[0] == "dense":
            x = jnp.dot(x, layer[1], precision=lax.Precision.HIGHEST) + layer[2]
    return x.reshape(*lead, *x.shape[1:])


def _log_power(params: DnsmosParams, frames: jax.Array) -> jax.Array:
    """Primary-model features: frames [..., 320] -> log10(max(|X|^2, 1e-12)) [..., 161]."""
    spec = jnp.dot(frames, params.dft, precision=lax.Precision.HIGHEST)
    re, im = spec[..., :161], spec[..., 161:]
    mag = jnp.sqrt(re * re + im * im)  # the graph's Sqrt then Pow(2)
    return jnp.log(jnp.maximum(mag * mag, 1e-12)) / jnp.float32(math.log(10.0))


def _frames(x: jax.Array, num_frames: int) -> jax.Array:
    """Non-centred frames of 320 samples, hop 160: x [..., >= 160 (F + 1)] -> [..., F, 320]."""
    halves = x[..., : (num_frames + 1) * FRAME_HOP]
    halves = halves.reshape(*x.shape[:-1], num_frames + 1, FRAME_HOP)
    return jnp.concatenate([halves[..., :-1, :], halves[..., 1:, :]], axis=-1)


def primary_net(params: DnsmosParams, segments: jax.Array) -> jax.Array:
    """sig_bak_ovr.onnx: raw 16 kHz segments [..., 144160] -> raw (SIG, BAK, OVRL) [..., 3]."""
    feats = _log_power(params, _frames(jnp.asarray(segments, jnp.float32), NUM_FRAMES))
    return _apply(params.front + params.back, feats[..., None])


def p808_net(params: DnsmosParams, features: jax.Array) -> jax.Array:
    """model_v8.onnx: mel features [..., 900, 120] -> raw P.808 MOS [..., 1]."""
    return _apply(params.p808, jnp.asarray(features, jnp.float32)[..., None])


def p808_features(segments: jax.Array) -> jax.Array:
    """P.808 input: segments[..., :-160] [..., 144000] -> features [..., 900, 120].

    (power_to_db(mel, ref=max, top_db=80) + 40) / 40 of librosa.feature.melspectrogram(n_fft=321,
    hop_length=160, n_mels=120): centred frames with zero padding, periodic Hann, power 2, Slaney
    mel bands 0-8 kHz. (REFERENCE.md says 901 frames; centring pads 160 per side, so 900 frames,
    which is also the only length the ONNX model accepts.)
    """
    spec = stft(segments, P808_N_FFT, FRAME_HOP, center=True, pad_mode="constant")
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    fb = jnp.asarray(mel_filterbank(SAMPLE_RATE, P808_N_FFT, P808_N_MELS, 0.0, SAMPLE_RATE / 2))
    mel = jnp.einsum("...tf,mf->...tm", power, fb, precision=lax.Precision.HIGHEST)
    return (spectrogram_to_db(mel, ref="max", top_db=80.0) + 40.0) / 40.0


def calibrate(raw: jax.Array) -> dict[str, jax.Array]:
    """Raw primary scores [..., 3] (SIG, BAK, OVRL) -> calibrated MOS per score name."""
    out = {}
    for i, name in enumerate(("sig", "bak", "ovrl")):
        a, b, c = CALIBRATION[name]
        x = raw[..., i]
        out[name] = (a * x + b) * x + c
    return out


# --- segmentation ---


def num_segments(num_samples: int) -> int:
    """Segments the reference scores for a signal of num_samples at 16 kHz (host int)."""
    n = int(num_samples)
    if n <= 0:
        return 0
    while n < SEGMENT_SAMPLES:
        n *= 2
    return int(math.floor(n / SEGMENT_HOP) - 9.01) + 1


def max_segments(max_samples: int) -> int:
    """Largest `num_segments(n)` over 1 <= n <= max_samples at 16 kHz: the static bound of a batch.

    Not monotonic in n: short clips are doubled, so a 2.2 s clip gets 9 segments, a 5 s clip one.
    """
    best = num_segments(max_samples)
    # Among lengths doubled m times, the longest one allowed gives the most segments.
    for m in range(1, 64):
        hi = min(max_samples, -(-SEGMENT_SAMPLES // 2 ** (m - 1)) - 1)
        if hi < 1:
            break
        best = max(best, num_segments(hi))
    return best


def required_segments(lengths, sample_rate: int) -> int:
    """The most segments any example of host `lengths` (samples at sample_rate) needs."""
    lengths16 = [_resampled_length(int(n), sample_rate) for n in np.ravel(np.asarray(lengths))]
    return max([num_segments(n) for n in lengths16], default=0)


def _resampled_length(num_samples, sample_rate: int):
    """ceil(n * 16000 / sample_rate), our resampler's output length (ints or int arrays)."""
    g = math.gcd(int(sample_rate), SAMPLE_RATE)
    up, down = SAMPLE_RATE // g, int(sample_rate) // g
    q, r = num_samples // down, num_samples % down  # split so int32 never overflows
    return q * up + -(-r * up // down)


def _segment_counts(lengths: jax.Array) -> jax.Array:
    """Traced twin of num_segments: lengths [B] int -> [B] int32."""
    n = lengths.astype(jnp.int32)
    rep = n
    for _ in range(18):  # 2^18 > 144160: enough doublings for any n >= 1
        rep = jnp.where(rep < SEGMENT_SAMPLES, rep * 2, rep)
    # int(floor(rep / 16000) - 9.01) + 1 with truncation toward zero = max(rep // 16000 - 9, 1)
    count = jnp.maximum(rep // SEGMENT_HOP - 9, 1)
    return jnp.where(n > 0, count, 0)


# --- scoring ---


_FRONT_RADIUS = 4  # frames of context each side of the primary model's full-resolution layers


def _front_radius(params: DnsmosParams) -> int:
    """Frames of context on each side that the full-resolution layers see (one per 3x3 conv)."""
    radius = sum(1 for layer in params.front if layer[0] == "conv")
    if radius != _FRONT_RADIUS:
        raise ValueError(f"primary model: {radius} full-resolution convs, expected {_FRONT_RADIUS}")
    return radius


def _num_frames(num_segs: int) -> int:
    """Primary-model frames spanned by segments 0..num_segs-1."""
    return (num_segs - 1) * SEGMENT_FRAME_HOP + NUM_FRAMES


def _periods(lengths: jax.Array) -> jax.Array:
    """Frame period of each example's repeated signal: n // 160 if 160 divides n (> 0), else a
    bound no window reaches. lengths [B] int at 16 kHz -> [B] int32."""
    n = lengths.astype(jnp.int32)
    periodic = (n > 0) & (n % FRAME_HOP == 0)
    return jnp.where(periodic, n // FRAME_HOP, jnp.iinfo(jnp.int32).max // 2)


def _primary_scores(
    params: DnsmosParams,
    audio: jax.Array,
    num_segs: int,
    periods: jax.Array | None = None,
    front_frames: int | None = None,
) -> jax.Array:
    """Raw primary scores of segments 0..num_segs-1 of repeated audio [N, >= samples] -> [N, S, 3].

    The full-resolution layers and the first conv after the first pool run once over all frames;
    each segment's border frames (which see the segment's zero padding) are redone from patches.
    With `front_frames` (static) and `periods` [N] (frames, see `_periods`), the full-resolution
    layers run over the first front_frames frames only and are reused periodically: frame f takes
    window frame r + (f - r) mod P (r = the layers' context), exact where P + 2r <= front_frames;
    other examples get NaN scores.
    """
    radius = _front_radius(params)
    edge = radius + radius % 2  # border frames to redo, even so they pool on their own
    num_frames = _num_frames(num_segs)
    feats = _log_power(params, _frames(audio, num_frames))[..., None]  # [N, F, 161, 1]

    ok = None
    if front_frames is None or front_frames >= num_frames:
        pooled = _pool(_apply(params.front, feats))  # [N, F / 2, 80, C]
    else:
        window = _apply(params.front, feats[:, :front_frames])  # [N, W, 161, C]
        f = jnp.arange(num_frames)
        p = periods[:, None]
        index = jnp.where(f < radius, f, radius + (f - radius) % p)  # [N, F]; f < r: unused
        ok = periods + 2 * radius <= front_frames  # [N]
        index = jnp.where(ok[:, None], index, jnp.minimum(f, front_frames - 1))
        full = jnp.take_along_axis(window, index[:, :, None, None], axis=1)
        pooled = _pool(full)  # [N, F / 2, 80, C]
    starts = jnp.arange(num_segs) * SEGMENT_FRAME_HOP  # segment starts in frames
    n, s, half = feats.shape[0], num_segs, NUM_FRAMES // 2

    def per_segment(x):  # [N * S, ...] -> [N, S, ...]
        return x.reshape(n, s, *x.shape[1:])

    # Full-resolution borders: each segment's first and last `edge` frames see its zero padding.
    offsets = jnp.arange(edge + radius)
    left = feats[:, starts[:, None] + offsets]  # [N, S, edge + r, 161, 1]
    right = feats[:, starts[:, None] + NUM_FRAMES - edge - radius + offsets]
    left = left.reshape(n * s, *left.shape[2:])
    right = right.reshape(n * s, *right.shape[2:])
    left, right = _edge_outputs(params.front, left, right)  # [N * S, edge, 161, C]
    inner = starts[:, None] // 2 + jnp.arange(edge // 2, half - edge // 2)
    seg = jnp.concatenate(
        [per_segment(_pool(left)), pooled[:, inner], per_segment(_pool(right))], axis=2
    )  # [N, S, 450, 80, C]: each segment's pooled frames
    # The back chain starts with that pool, then conv, relu, pool. The conv also runs once over
    # the shared pooled frames (segment starts are even there, so its pool grid is shared too);
    # each segment redoes only the outputs that see its own border frames (edge / 2 + 1 of them,
    # rounded up to whole pool pairs) from its own frames.
    if tuple(layer[0] for layer in params.back[:4]) != ("pool", "conv", "relu", "pool"):
        raise ValueError("primary model: expected pool, conv, relu, pool to start the back chain")
    conv_relu = params.back[1:3]
    pooled2 = _pool(_apply(conv_relu, pooled))  # [N, F / 4, 40, C]
    width = edge // 2 + 2 - edge // 2 % 2  # outputs to redo per side, even
    seg_flat = seg.reshape(n * s, *seg.shape[2:])
    left, right = _edge_outputs(conv_relu, seg_flat[:, : width + 1], seg_flat[:, -width - 1 :])
    inner = starts[:, None] // 4 + jnp.arange(width // 2, half // 2 - width // 2)
    seg = jnp.concatenate(
        [per_segment(_pool(left)), pooled2[:, inner], per_segment(_pool(right))], axis=2
    )  # [N, S, 225, 40, C]
    raw = _apply(params.back[4:], seg)
    return raw if ok is None else jnp.where(ok[:, None, None], raw, jnp.nan)


def _segment_scores(
    params: DnsmosParams,
    audio: jax.Array,
    num_segs: int,
    periods: jax.Array | None = None,
    front_frames: int | None = None,
) -> jax.Array:
    """Repeated 16 kHz audio [N, total] -> raw scores [N, S, 4] (SIG, BAK, OVRL, P808)."""
    primary = _primary_scores(params, audio, num_segs, periods, front_frames)
    seg_index = jnp.arange(num_segs)[:, None] * SEGMENT_HOP + jnp.arange(NUM_FRAMES * FRAME_HOP)
    p808 = p808_net(params, p808_features(audio[:, seg_index]))  # [N, S, 1]
    return jnp.concatenate([primary, p808], axis=-1)


def front_frames_needed(lengths, sample_rate: int, round_to: int = 50) -> int | None:
    """Fewest `front_frames` (dnsmos_raw) exact for host `lengths` at sample_rate; None: all.

    An example whose 16 kHz length n is a multiple of 160 samples repeats every n / 160 frames, so
    the shared layers need only n / 160 + 2 r frames of it (r = 4 frames of context). Rounded up to
    `round_to` frames (fewer compiles); None as soon as one non-empty example is not periodic.
    """
    need = 0
    for n in np.ravel(np.asarray(lengths)):
        n16 = _resampled_length(int(n), sample_rate)
        if n16 <= 0:
            continue
        if n16 % FRAME_HOP:
            return None
        need = max(need, n16 // FRAME_HOP + 2 * _FRONT_RADIUS)
    return int(-(-max(need, 1) // round_to) * round_to)


def distinct_segments_needed(lengths, sample_rate: int) -> int | None:
    """Fewest `distinct_segs` (dnsmos_raw) exact for host `lengths` at sample_rate; None: all.

    Segment k of an example repeated with period n (16 kHz samples) starts at 16000 k mod n, so it
    equals segment k mod q, q = n / gcd(n, 16000) (a 4 s clip: 4 distinct segments of 7). Returns
    the largest q over the examples that need more than q segments, None if none does.
    """
    need, any_repeat = 0, False
    for n in np.ravel(np.asarray(lengths)):
        n16 = _resampled_length(int(n), sample_rate)
        if n16 <= 0:
            continue
        count, q = num_segments(n16), n16 // math.gcd(n16, SEGMENT_HOP)
        any_repeat |= q < count
        need = max(need, min(q, count))
    return need if any_repeat else None


def _segment_periods(lengths: jax.Array, bound: int) -> jax.Array:
    """Traced q = n / gcd(n, 16000) of each 16 kHz length, where <= bound (else bound + 1)."""
    n = jnp.maximum(lengths.astype(jnp.int32), 1)
    q = jnp.full(n.shape, bound + 1, jnp.int32)
    for k in range(bound, 0, -1):  # smallest k with 16000 k = 0 mod n; 16000 * bound fits int32
        q = jnp.where((SEGMENT_HOP * k) % n == 0, k, q)
    return q


def dnsmos_raw(
    params: DnsmosParams,
    est: jax.Array,
    lengths: jax.Array,
    sample_rate: int,
    max_segs: int | None = None,
    chunk_size: int | None = 1,
    front_frames: int | None = None,
    distinct_segs: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Raw per-segment scores [B, S, 4] (SIG, BAK, OVRL, P808) and their validity [B, S].

    S = max_segs, by default `max_segments` of the padded length at 16 kHz (right for any lengths).
    Examples run `chunk_size` at a time (None: all at once), which bounds the memory of the
    full-resolution layers (~12 MB per second of repeated signal, per example). front_frames
    (static; from `front_frames_needed`, None = all frames) runs the primary model's shared layers
    over that many frames and reuses them periodically; examples it does not cover get NaN raw
    primary scores (never silently wrong ones). distinct_segs (static; from
    `distinct_segments_needed`, None = all) scores only segments 0..distinct_segs-1 and copies them
    to the later segments with the same content; segments it does not cover get NaN.
    """
    x = jnp.asarray(est, jnp.float32)
    lengths = jnp.clip(jnp.asarray(lengths, jnp.int32), 0, x.shape[-1])
    if sample_rate != SAMPLE_RATE:
        x = resample(x, sample_rate, SAMPLE_RATE, **_RESAMPLE_KWARGS)
        lengths = jnp.minimum(_resampled_length(lengths, sample_rate), x.shape[-1])
    num_segs = max(max_segments(x.shape[-1]) if max_segs is None else int(max_segs), 1)
    total = (num_segs - 1) * SEGMENT_HOP + SEGMENT_SAMPLES
    # The repeated signal (doubling = periodic extension), as far as the last segment reaches.
    index = jnp.arange(total, dtype=jnp.int32)[None, :] % jnp.maximum(lengths, 1)[:, None]
    audio = jnp.take_along_axis(x, index, axis=-1)  # [B, total]
    periods = _periods(lengths)
    scored = num_segs if distinct_segs is None else min(max(int(distinct_segs), 1), num_segs)
    if chunk_size is None or chunk_size >= audio.shape[0]:
        raw = _segment_scores(params, audio, scored, periods, front_frames)
    else:
        raw = lax.map(
            lambda ap: _segment_scores(params, ap[0][None], scored, ap[1][None], front_frames)[0],
            (audio, periods),
            batch_size=chunk_size,
        )
    if scored < num_segs:  # segment k = segment k mod q (same samples)
        q = _segment_periods(lengths, scored)[:, None]
        k = jnp.arange(num_segs)[None, :]
        src = jnp.where(k < scored, k, jnp.where(q <= scored, k % q, 0))
        raw = jnp.take_along_axis(raw, src[:, :, None], axis=1)
        raw = jnp.where(((k < scored) | (q <= scored))[:, :, None], raw, jnp.nan)
    valid = jnp.arange(num_segs)[None, :] < _segment_counts(lengths)[:, None]
    return raw, valid


def segment_mean(raw: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
    """Per-segment raw scores [B, S, 4] and validity [B, S] -> dict(sig, bak, ovrl, p808) [B].

    Calibrates SIG / BAK / OVRL per segment, then averages the valid segments (NaN if none).
    """
    count = jnp.sum(valid, axis=-1)

    def mean(v):
        total = jnp.sum(jnp.where(valid, v, 0.0), axis=-1)
        return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)

    scores = {k: mean(v) for k, v in calibrate(raw[..., :3]).items()}
    scores["p808"] = mean(raw[..., 3])
    return scores


def shortcuts(
    lengths, num_samples: int, sample_rate: int, max_segs: int | None = None
) -> tuple[int | None, int | None]:
    """(front_frames, distinct_segs) for `dnsmos_raw` on a batch padded to num_samples with host
    `lengths`: the exact shortcuts for periodic (repeated) signals, None where they save nothing.
    Static arguments, so one compile per value; valid for any subset of the batch's rows."""
    num_segs = max_segments(_resampled_length(int(num_samples), sample_rate))
    num_segs = max(num_segs if max_segs is None else int(max_segs), 1)
    distinct_segs = distinct_segments_needed(lengths, sample_rate)
    if distinct_segs is not None and distinct_segs >= num_segs:
        distinct_segs = None
    front_frames = front_frames_needed(lengths, sample_rate)
    if front_frames is not None and front_frames >= _num_frames(distinct_segs or num_segs):
        front_frames = None  # no saving
    return front_frames, distinct_segs


@functools.partial(
    jax.jit,
    static_argnames=("sample_rate", "max_segs", "chunk_size", "front_frames", "distinct_segs"),
)
def _dnsmos_jit(
    params, est, lengths, sample_rate, max_segs, chunk_size, front_frames, distinct_segs
):
    raw = dnsmos_raw(
        params, est, lengths, sample_rate, max_segs, chunk_size, front_frames, distinct_segs
    )
    return segment_mean(*raw)


def dnsmos(
    est,
    lengths,
    sample_rate: int,
    *,
    params: DnsmosParams | None = None,
    max_segs: int | None = None,
    chunk_size: int | None = 1,
) -> dict[str, jax.Array]:
    """DNSMOS of a padded batch est [B, T] with valid `lengths` [B] (samples) at sample_rate (Hz).

    Returns dict(sig, bak, ovrl, p808), each [B] float32: calibrated P.835 scores and the P.808 MOS,
    averaged over each example's segments (NaN for empty examples). Compiled once per (B, T,
    sample_rate, max_segs, chunk_size) and, with host lengths, per value of the two shortcuts for
    repeated clips (`front_frames_needed`, `distinct_segments_needed`; module docstring). max_segs=None provisions the segments any length <= T may
    need (up to 9 below 19 s); `required_segments(lengths, sample_rate)` is often fewer (less
    work, one compile per value). Works under jit (lengths may then be traced).
    """
    params = load_dnsmos_params() if params is None else params
    est = jnp.asarray(est, jnp.float32)
    if est.ndim != 2:
        raise ValueError(f"est must be [batch, time], got shape {est.shape}")
    if not isinstance(lengths, jax.core.Tracer):
        host = np.asarray(lengths)
        if host.shape != est.shape[:1] or np.any(host < 0) or np.any(host > est.shape[1]):
            raise ValueError(f"lengths {host.tolist()} do not fit est of shape {est.shape}")
        needed = required_segments(host, sample_rate)
        if max_segs is not None and needed > max_segs:
            raise ValueError(f"max_segs={max_segs} but these lengths need {needed} segments")
        front_frames, distinct_segs = shortcuts(host, est.shape[1], sample_rate, max_segs)
    else:
        front_frames = distinct_segs = None
    return _dnsmos_jit(
        params,
        est,
        jnp.asarray(lengths, jnp.int32),
        int(sample_rate),
        max_segs,
        chunk_size,
        front_frames,
        distinct_segs,
    )
