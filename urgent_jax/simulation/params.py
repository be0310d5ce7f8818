"""Simulation parameters: jax.random sampling (REFERENCE.md §2.1) and the official meta.tsv syntax (§1.3).

Two representations of one example's parameters:

- `SimParams`, a pytree of arrays used on device by `mixer.simulate` (batched with a leading axis).
  Augmentations are encoded as `aug_position[t]` = application slot (0, 1, 2) of augmentation type t
  (order `AUGMENTATIONS`) or -1 when unused, plus each type's own parameters.
- `AugmentationChain`, exact host-side values of the `augmentation` column of meta.tsv (Python floats,
  the packet-loss index list in its written order), so that `format_augmentation(parse_augmentation(s))
  == s` for official lines. `chain_to_params` / `params_to_chain` convert between the two.

The string syntax exists only here, at the file boundary; configs use plain ranges and probabilities.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from urgent_jax.audio.resample import SAMPLE_RATES

AUGMENTATIONS = ("bandwidth_limitation", "clipping", "codec", "packet_loss")
BANDWIDTH, CLIPPING, CODEC, PACKET_LOSS = range(4)
RESAMPLE_METHODS = ("kaiser_best", "kaiser_fast", "scipy", "polyphase")
# (format, encoder) of the codec ids used by simulation.codec (0 mp3, 1 vorbis, 2 opus).
CODECS = (("mp3", None), ("ogg", "vorbis"), ("ogg", "opus"))
MAX_AUGMENTATIONS = 4  # slots: every type at most once (the official distribution stops at 3)


class SimParams(NamedTuple):
    """Per-example simulation parameters (one example; batch by stacking / vmap)."""

    snr_db: jax.Array  # f32, SNR of the (wind) noise on active regions, dB
    use_rir: jax.Array  # bool, reverberate (needs an RIR in the batch)
    use_wind: jax.Array  # bool, wind-noise mixing instead of additive noise
    wind_threshold: jax.Array  # f32, compressor threshold (linear)
    wind_ratio: jax.Array  # f32, compression ratio
    wind_attack_ms: jax.Array  # f32
    wind_release_ms: jax.Array  # f32
    wind_sc_gain: jax.Array  # f32, side-chain gain
    wind_clipping: jax.Array  # bool
    wind_clipping_threshold: jax.Array  # f32, fraction of the mix's extremes
    aug_position: jax.Array  # i32[4], slot of each of AUGMENTATIONS, -1 = unused
    bw_method: jax.Array  # i32, index into RESAMPLE_METHODS
    bw_fs_new: jax.Array  # i32, Hz; == fs means no-op
    clip_q_min: jax.Array  # f32, lower clipping quantile
    clip_q_max: jax.Array  # f32, upper clipping quantile
    codec_id: jax.Array  # i32, index into CODECS
    codec_qscale: jax.Array  # i32, ffmpeg-style quality
    packet_lost: jax.Array  # bool[max_packets], lost 20 ms packets


def max_packets(max_num_samples: int, sample_rate: int, packet_duration_ms: int = 20) -> int:
    """Size of `packet_lost`: packets covering max_num_samples (the last one may be partial)."""
    packet = packet_duration_ms * sample_rate // 1000
    return -(-max_num_samples // packet)


def lower_rates(sample_rate: int) -> tuple[int, ...]:
    """The URGENT rates strictly below sample_rate (bandwidth-limitation targets)."""
    return tuple(r for r in SAMPLE_RATES if r < sample_rate)


# --- sampling ------------------------------------------------------------------------------------


def _uniform(key, bounds):
    lo, hi = bounds
    return jax.random.uniform(key, (), jnp.float32, lo, hi)


def _packet_loss_mask(key, num_samples, sample_rate, num_slots, packet_duration_ms, loss_rate,
                      max_burst):
    """Lost-packet flags following the official generator (REFERENCE.md §2.7).

    n_lost = round(rate * duration / packet) packets are split into bursts of randint[1, max_burst)
    packets until at most max_burst remain, which form the last burst (possibly empty); burst starts
    are distinct packets drawn without replacement; overlapping bursts merge.
    """
    rate_key, len_key, start_key = jax.random.split(key, 3)
    packet = packet_duration_ms * sample_rate // 1000
    num_packets = num_samples // packet  # whole packets: the official count
    rate = _uniform(rate_key, loss_rate)
    n_lost = jnp.round(rate * num_samples / packet).astype(jnp.int32)
    bursts = jax.random.randint(len_key, (num_slots,), 1, max_burst)
    cum = jnp.cumsum(bursts)
    # First burst after which the remainder fits in one burst; the remainder is appended.
    done = cum >= n_lost - max_burst
    stop = jnp.argmax(done)  # index of the last random burst
    count = jnp.where(n_lost > 0, stop + 2, 0)  # random bursts + remainder burst
    remainder = n_lost - cum[stop]
    idx = jnp.arange(num_slots)
    lengths = jnp.where(idx <= stop, bursts, jnp.where(idx == stop + 1, remainder, 0))
    lengths = jnp.where(idx < count, jnp.maximum(lengths, 0), 0)
    # Distinct starts: a random order of the packets [0, num_packets) (Gumbel keys, others last).
    scores = jax.random.uniform(start_key, (num_slots,))
    scores = jnp.where(idx < num_packets, scores, 2.0)
    starts = jnp.argsort(scores)  # first `count` entries are distinct valid packets
    p = jnp.arange(num_slots)[:, None]
    lost = (p >= starts[None, :]) & (p < starts[None, :] + lengths[None, :])
    return jnp.any(lost, axis=1)


def sample_params(
    key,
    num_samples,
    *,
    sample_rate: int,
    max_num_samples: int,
    p_wind: float = 0.05,
    snr_db: tuple[float, float] = (-5.0, 20.0),
    wind_snr_db: tuple[float, float] = (-10.0, 15.0),
    p_reverb: float = 0.5,
    num_aug_probs: tuple[float, ...] = (0.25, 0.40, 0.20, 0.15),
    aug_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    resample_methods: tuple[str, ...] = RESAMPLE_METHODS,
    clip_min_quantile: tuple[float, float] = (0.0, 0.1),
    clip_max_quantile: tuple[float, float] = (0.9, 1.0),
    codec_formats: tuple[str, ...] = ("mp3", "ogg"),
    ogg_encoders: tuple[str, ...] = ("vorbis", "opus"),
    mp3_qscale: tuple[int, int] = (1, 10),
    ogg_qscale: tuple[int, int] = (-1, 10),
    packet_duration_ms: int = 20,
    packet_loss_rate: tuple[float, float] = (0.05, 0.25),
    max_continuous_packet_loss: int = 10,
    wind_threshold: tuple[float, float] = (0.1, 0.3),
    wind_ratio: tuple[float, float] = (1.0, 20.0),
    wind_attack_ms: tuple[float, float] = (5.0, 100.0),
    wind_release_ms: tuple[float, float] = (5.0, 100.0),
    wind_sc_gain: tuple[float, float] = (0.8, 1.2),
    wind_clipping_threshold: tuple[float, float] = (0.85, 1.0),
    p_wind_clipping: float = 0.75,
    use_wind=None,
    use_rir=None,
    num_packet_slots: int | None = None,
) -> SimParams:
    """Draw one example's parameters (defaults: the official training config, REFERENCE.md §2.1).

    num_samples may be traced (the example's length, for packet loss). sample_rate and max_num_samples
    are static ints, unless num_packet_slots (the size of `packet_lost`) is given: then sample_rate
    may be traced too, so one compiled sampler serves every rate. Integer ranges are [low, high) as numpy's randint. vmap over keys and lengths for a
    batch. With wind noise, clipping is excluded from the augmentation draw (the official redraw loop,
    without its endless-loop case: the count is capped at the number of allowed types).

    use_wind / use_rir (bool, may be traced): decisions already taken by whoever selected the sources
    (the dynamic-mixing loader decides whether it loaded a wind noise and an RIR); drawn here when None.
    """
    if len(num_aug_probs) > MAX_AUGMENTATIONS + 1:
        raise ValueError(f"at most {MAX_AUGMENTATIONS} augmentations per example")
    keys = iter(jax.random.split(key, 24))
    drawn_wind = jax.random.uniform(next(keys)) < p_wind
    use_wind = drawn_wind if use_wind is None else jnp.asarray(use_wind, bool)
    num_aug = jax.random.choice(next(keys), len(num_aug_probs), p=jnp.asarray(num_aug_probs))
    # Weighted sampling without replacement in draw order = Gumbel top-k on log weights.
    log_w = jnp.log(jnp.asarray(aug_weights, jnp.float32))
    log_w = jnp.where(use_wind & (jnp.arange(4) == CLIPPING), -jnp.inf, log_w)
    allowed = jnp.sum(jnp.isfinite(log_w))
    num_aug = jnp.minimum(num_aug, allowed)
    g = log_w + jax.random.gumbel(next(keys), (4,))
    order = jnp.argsort(-g)  # types in draw order
    rank = jnp.argsort(order)  # draw position of each type
    aug_position = jnp.where((rank < num_aug) & jnp.isfinite(log_w), rank, -1).astype(jnp.int32)

    snr = jnp.where(use_wind, _uniform(next(keys), wind_snr_db), _uniform(next(keys), snr_db))
    drawn_rir = jax.random.uniform(next(keys)) < p_reverb
    use_rir = drawn_rir if use_rir is None else jnp.asarray(use_rir, bool)

    method_ids = jnp.asarray([RESAMPLE_METHODS.index(m) for m in resample_methods], jnp.int32)
    bw_method = jax.random.choice(next(keys), method_ids)
    rates = jnp.asarray(SAMPLE_RATES, jnp.int32)  # ascending: the lower rates come first
    num_lower = jnp.sum(rates < sample_rate)
    pick = jax.random.randint(next(keys), (), 0, jnp.maximum(num_lower, 1))
    # No lower rate (8 kHz): the official 'none' method with fs_new = fs.
    bw_fs_new = jnp.where(num_lower > 0, rates[pick], sample_rate).astype(jnp.int32)
    bw_method = jnp.where(num_lower > 0, bw_method, -1).astype(jnp.int32)

    fmt_is_mp3 = jax.random.choice(next(keys), jnp.asarray([f == "mp3" for f in codec_formats]))
    encoder_ids = jnp.asarray([1 if e == "vorbis" else 2 for e in ogg_encoders], jnp.int32)
    ogg_id = jax.random.choice(next(keys), encoder_ids)
    codec_id = jnp.where(fmt_is_mp3, 0, ogg_id).astype(jnp.int32)
    qscale = jnp.where(
        fmt_is_mp3,
        jax.random.randint(next(keys), (), *mp3_qscale),
        jax.random.randint(next(keys), (), *ogg_qscale),
    ).astype(jnp.int32)

    if num_packet_slots is None:
        num_packet_slots = max_packets(max_num_samples, sample_rate, packet_duration_ms)
    slots = num_packet_slots
    lost = _packet_loss_mask(next(keys), num_samples, sample_rate, slots, packet_duration_ms,
                             packet_loss_rate, max_continuous_packet_loss)
    return SimParams(
        snr_db=snr,
        use_rir=use_rir,
        use_wind=use_wind,
        wind_threshold=_uniform(next(keys), wind_threshold),
        wind_ratio=_uniform(next(keys), wind_ratio),
        wind_attack_ms=_uniform(next(keys), wind_attack_ms),
        wind_release_ms=_uniform(next(keys), wind_release_ms),
        wind_sc_gain=_uniform(next(keys), wind_sc_gain),
        wind_clipping=jax.random.uniform(next(keys)) < p_wind_clipping,
        wind_clipping_threshold=_uniform(next(keys), wind_clipping_threshold),
        aug_position=aug_position,
        bw_method=jnp.asarray(bw_method, jnp.int32),
        bw_fs_new=jnp.asarray(bw_fs_new, jnp.int32),
        clip_q_min=_uniform(next(keys), clip_min_quantile),
        clip_q_max=_uniform(next(keys), clip_max_quantile),
        codec_id=codec_id,
        codec_qscale=qscale,
        packet_lost=lost,
    )


def sample_batch_params(
    key, lengths, *, sample_rate, max_num_samples: int | None = None, use_wind=None, use_rir=None,
    num_packet_slots: int | None = None, **config
):
    """Batched `sample_params`: one independent key per example (fold_in of the example index).
    use_wind / use_rir: optional [B] bool decisions of the source loader. sample_rate: a static int,
    or a [B] array together with num_packet_slots (mixed rates, one compiled sampler)."""
    lengths = jnp.asarray(lengths, jnp.int32)
    batch = lengths.shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch))
    wind = jnp.zeros(batch, bool) if use_wind is None else jnp.asarray(use_wind, bool)
    rir = jnp.zeros(batch, bool) if use_rir is None else jnp.asarray(use_rir, bool)
    static_rate = isinstance(sample_rate, int)
    rates = jnp.broadcast_to(jnp.asarray(sample_rate, jnp.int32), (batch,))

    def one(k, n, w, r, fs):
        return sample_params(
            k, n, sample_rate=sample_rate if static_rate else fs, max_num_samples=max_num_samples,
            use_wind=None if use_wind is None else w, use_rir=None if use_rir is None else r,
            num_packet_slots=num_packet_slots, **config,
        )  # fmt: skip

    return jax.vmap(one)(keys, lengths, wind, rir, rates)


# --- meta.tsv augmentation syntax ----------------------------------------------------------------


class AugmentationSyntaxError(ValueError):
    """An `augmentation` string that is not in the official syntax."""


@dataclasses.dataclass(frozen=True)
class WindSpec:
    threshold: float
    ratio: float
    attack: float  # ms
    release: float  # ms
    sc_gain: float
    clipping: bool
    clipping_threshold: float


@dataclasses.dataclass(frozen=True)
class BandwidthSpec:
    method: str  # one of RESAMPLE_METHODS or 'none'
    fs_new: int


@dataclasses.dataclass(frozen=True)
class ClippingSpec:
    q_min: float
    q_max: float


@dataclasses.dataclass(frozen=True)
class CodecSpec:
    format: str  # mp3 | ogg
    encoder: str | None  # None | vorbis | opus
    qscale: int


@dataclasses.dataclass(frozen=True)
class PacketLossSpec:
    indices: tuple[int, ...]  # in written order
    packet_duration_ms: int = 20


@dataclasses.dataclass(frozen=True)
class AugmentationChain:
    """The `augmentation` column: optional wind-noise settings, then augmentations in order."""

    wind: WindSpec | None = None
    items: tuple = ()


_FLOAT = r"([-+0-9.eE]+|nan|inf|-inf)"
_PATTERNS = {
    "wind": re.compile(
        rf"wind_noise\(threshold={_FLOAT},ratio={_FLOAT},attack={_FLOAT},release={_FLOAT},"
        rf"sc_gain={_FLOAT},clipping=(True|False),clipping_threshold={_FLOAT}\)"
    ),
    "bandwidth": re.compile(r"bandwidth_limitation-(kaiser_best|kaiser_fast|scipy|polyphase|none)->(\d+)"),
    "clipping": re.compile(rf"clipping\(min={_FLOAT},max={_FLOAT}\)"),
    "codec": re.compile(r"codec\(format=(mp3|ogg),encoder=(None|vorbis|opus),qscale=(-?\d+)\)"),
    "packet_loss": re.compile(r"packet_loss\(packet_loss_indices=(\[[0-9, ]*\]),packet_duration_ms=(\d+)\)"),
}


def _fmt(x: float) -> str:
    return repr(float(x))


def format_item(item) -> str:
    if isinstance(item, WindSpec):
        return (
            f"wind_noise(threshold={_fmt(item.threshold)},ratio={_fmt(item.ratio)},"
            f"attack={_fmt(item.attack)},release={_fmt(item.release)},sc_gain={_fmt(item.sc_gain)},"
            f"clipping={bool(item.clipping)},clipping_threshold={_fmt(item.clipping_threshold)})"
        )
    if isinstance(item, BandwidthSpec):
        return f"bandwidth_limitation-{item.method}->{int(item.fs_new)}"
    if isinstance(item, ClippingSpec):
        return f"clipping(min={_fmt(item.q_min)},max={_fmt(item.q_max)})"
    if isinstance(item, CodecSpec):
        return f"codec(format={item.format},encoder={item.encoder},qscale={int(item.qscale)})"
    if isinstance(item, PacketLossSpec):
        return (
            f"packet_loss(packet_loss_indices={list(item.indices)},"
            f"packet_duration_ms={int(item.packet_duration_ms)})"
        )
    raise TypeError(f"not an augmentation spec: {item!r}")


def format_augmentation(chain: AugmentationChain) -> str:
    """The official `augmentation` string: `none`, or items joined by '/', wind settings first and
    always followed by '/' (so a wind-only chain ends with '/')."""
    body = "/".join(format_item(i) for i in chain.items)
    if chain.wind is not None:
        return f"{format_item(chain.wind)}/{body}"
    return body or "none"


def parse_item(text: str):
    m = _PATTERNS["wind"].fullmatch(text)
    if m:
        g = m.groups()
        return WindSpec(float(g[0]), float(g[1]), float(g[2]), float(g[3]), float(g[4]),
                        g[5] == "True", float(g[6]))
    m = _PATTERNS["bandwidth"].fullmatch(text)
    if m:
        return BandwidthSpec(m.group(1), int(m.group(2)))
    m = _PATTERNS["clipping"].fullmatch(text)
    if m:
        return ClippingSpec(float(m.group(1)), float(m.group(2)))
    m = _PATTERNS["codec"].fullmatch(text)
    if m:
        encoder = None if m.group(2) == "None" else m.group(2)
        return CodecSpec(m.group(1), encoder, int(m.group(3)))
    m = _PATTERNS["packet_loss"].fullmatch(text)
    if m:
        return PacketLossSpec(tuple(int(i) for i in ast.literal_eval(m.group(1))), int(m.group(2)))
    raise AugmentationSyntaxError(f"unknown augmentation item {text!r}")


def parse_augmentation(text: str) -> AugmentationChain:
    """Inverse of format_augmentation. Raises AugmentationSyntaxError on anything unknown."""
    if text == "none":
        return AugmentationChain()
    parts = text.split("/")
    wind = None
    items = []
    for i, part in enumerate(parts):
        if part == "" and i == len(parts) - 1 and wind is not None:
            continue  # the trailing '/' of a wind-only chain
        item = parse_item(part)
        if isinstance(item, WindSpec):
            if i != 0:
                raise AugmentationSyntaxError(f"wind_noise(...) must come first in {text!r}")
            wind = item
        else:
            items.append(item)
    kinds = [type(i) for i in items]
    if len(set(kinds)) != len(kinds):
        raise AugmentationSyntaxError(f"an augmentation type appears twice in {text!r}")
    return AugmentationChain(wind, tuple(items))


def chain_to_params(
    chain: AugmentationChain,
    *,
    snr_db: float,
    use_rir: bool,
    sample_rate: int,
    max_num_samples: int,
) -> SimParams:
    """Host SimParams (numpy arrays) for one meta.tsv row; unused fields get neutral values."""
    slots = max_packets(max_num_samples, sample_rate)
    position = np.full(4, -1, np.int32)
    bw_method, bw_fs_new = -1, sample_rate
    q_min, q_max, codec_id, qscale = 0.0, 1.0, 0, 0
    lost = np.zeros(slots, bool)
    kinds = {BandwidthSpec: BANDWIDTH, ClippingSpec: CLIPPING, CodecSpec: CODEC, PacketLossSpec: PACKET_LOSS}
    for slot, item in enumerate(chain.items):
        position[kinds[type(item)]] = slot
        if isinstance(item, BandwidthSpec):
            bw_method = RESAMPLE_METHODS.index(item.method) if item.method != "none" else -1
            bw_fs_new = item.fs_new
        elif isinstance(item, ClippingSpec):
            q_min, q_max = item.q_min, item.q_max
        elif isinstance(item, CodecSpec):
            if (item.format, item.encoder) not in CODECS:
                raise AugmentationSyntaxError(
                    f"unsupported codec {format_item(item)} (format/encoder pairs: {CODECS})"
                )
            codec_id = CODECS.index((item.format, item.encoder))
            qscale = item.qscale
        elif isinstance(item, PacketLossSpec):
            if item.packet_duration_ms != 20:
                raise AugmentationSyntaxError("only 20 ms packets are supported")
            idx = np.asarray([i for i in item.indices if 0 <= i < slots], np.int64)
            lost[idx] = True
    w = chain.wind
    f32 = np.float32
    return SimParams(
        snr_db=f32(snr_db),
        use_rir=np.bool_(use_rir),
        use_wind=np.bool_(w is not None),
        wind_threshold=f32(w.threshold if w else 0.2),
        wind_ratio=f32(w.ratio if w else 1.0),
        wind_attack_ms=f32(w.attack if w else 20.0),
        wind_release_ms=f32(w.release if w else 250.0),
        wind_sc_gain=f32(w.sc_gain if w else 1.0),
        wind_clipping=np.bool_(w.clipping if w else False),
        wind_clipping_threshold=f32(w.clipping_threshold if w else 1.0),
        aug_position=position,
        bw_method=np.int32(bw_method),
        bw_fs_new=np.int32(bw_fs_new),
        clip_q_min=f32(q_min),
        clip_q_max=f32(q_max),
        codec_id=np.int32(codec_id),
        codec_qscale=np.int32(qscale),
        packet_lost=lost,
    )


def params_to_chain(params: SimParams, *, sample_rate: int, num_samples: int) -> AugmentationChain:
    """The meta.tsv chain for one example's (host) SimParams. Packet indices are the lost packets
    that start inside the signal, written in ascending order (the order a Python set of small ints
    iterates in)."""
    p = jax.tree.map(np.asarray, params)
    items: list = [None] * 4
    position = p.aug_position
    for t in range(4):
        s = int(position[t])
        if s < 0:
            continue
        if t == BANDWIDTH:
            method = "none" if int(p.bw_method) < 0 else RESAMPLE_METHODS[int(p.bw_method)]
            items[s] = BandwidthSpec(method, int(p.bw_fs_new))
        elif t == CLIPPING:
            items[s] = ClippingSpec(float(p.clip_q_min), float(p.clip_q_max))
        elif t == CODEC:
            fmt, enc = CODECS[int(p.codec_id)]
            items[s] = CodecSpec(fmt, enc, int(p.codec_qscale))
        else:
            packet = 20 * sample_rate // 1000
            last = -(-num_samples // packet)
            items[s] = PacketLossSpec(tuple(int(i) for i in np.flatnonzero(p.packet_lost[:last])))
    wind = None
    if bool(p.use_wind):
        wind = WindSpec(float(p.wind_threshold), float(p.wind_ratio), float(p.wind_attack_ms),
                        float(p.wind_release_ms), float(p.wind_sc_gain), bool(p.wind_clipping),
                        float(p.wind_clipping_threshold))
    return AugmentationChain(wind, tuple(i for i in items if i is not None))
