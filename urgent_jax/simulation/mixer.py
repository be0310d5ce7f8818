"""`simulate`: one pure, jitted function rendering a batch of noisy/target pairs (REFERENCE.md §2.3).

Inputs are padded source batches of one sampling rate (`Sources`) and per-example `SimParams`; the
order of operations is the reference's: high-pass on speech -> reverberation (+ early-RIR target) ->
noise at the drawn SNR (additive, or wind noise through the side-chain compressor) -> augmentations in
their drawn order -> joint peak normalisation to 0.9. Where it runs (a Grain batch transform on the
host, or inside the train step on the accelerator) is the caller's choice; the function is the same.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from urgent_jax.simulation import codec, distortions, wind
from urgent_jax.simulation.params import (
    BANDWIDTH,
    CLIPPING,
    CODEC,
    MAX_AUGMENTATIONS,
    PACKET_LOSS,
    SimParams,
    sample_batch_params,
)


class Sources(NamedTuple):
    """A padded batch of sources at one sampling rate (zeros beyond each length)."""

    speech: jax.Array  # [B, T]
    lengths: jax.Array  # [B] int32, speech samples
    noise: jax.Array  # [B, Tn]
    noise_lengths: jax.Array  # [B]
    rir: jax.Array  # [B, Tr]
    rir_lengths: jax.Array  # [B]; 0 = no RIR available
    is_wind: jax.Array | None = None  # [B] bool: the loader picked a wind noise (None: params decide)


class Mixture(NamedTuple):
    target: jax.Array  # [B, T] (early-reverberant) clean speech, peak-normalised with noisy
    noisy: jax.Array  # [B, T]
    noise: jax.Array  # [B, T] the noise as mixed (scaled)
    lengths: jax.Array  # [B]
    gain: jax.Array  # [B] the joint normalisation gain


def _apply_rows(mask, fn, x, sub_batches: tuple[int, ...]):
    """x with rows `mask` replaced by fn(x[rows], rows); other rows unchanged.

    fn(x_rows, rows) computes on the given rows only (it gathers its per-example parameters with
    `rows`). At run time: nothing when no row needs it, the smallest gathered sub-batch (sizes
    `sub_batches`, ascending) that holds the masked rows when few do (the common case: each
    augmentation slot touches a few examples of a batch), the whole batch otherwise.
    """
    batch = x.shape[0]
    sizes = [n for n in sorted(set(sub_batches)) if 0 < n < batch]
    count = jnp.sum(mask)

    def rows_mask(m):
        return m.reshape(m.shape + (1,) * (x.ndim - 1))

    def skip(a):
        return a

    def gathered(size):
        def run(a):
            rows = jnp.argsort(~mask, stable=True)[:size]  # the masked rows first
            y = fn(a[rows], rows)
            return a.at[rows].set(jnp.where(rows_mask(mask[rows]), y, a[rows]))

        return run

    def full(a):
        return jnp.where(rows_mask(mask), fn(a, jnp.arange(batch)), a)

    branch = (count > 0).astype(jnp.int32) + sum((count > n).astype(jnp.int32) for n in sizes)
    return jax.lax.switch(branch, [skip] + [gathered(n) for n in sizes] + [full], x)


def simulate(
    key,
    sources: Sources,
    params: SimParams,
    sample_rate: int,
    *,
    use_highpass: bool = True,
    amix_gain: float = 1.0,
    codec_mesh=None,
    num_aug_slots: int = 3,
) -> Mixture:
    """Render a batch. params fields have a leading batch axis; sample_rate is static.

    key only drives the noise crop/wrap offsets (everything else is in params). amix_gain scales the
    wind mix (1.0 intended, 0.5 reproduces the official ffmpeg amix halving). codec_mesh: run the codec
    callback per shard of a batch sharded over the mesh's 'data' axis. num_aug_slots (static): how
    many augmentation positions to render (3 = the official maximum; each costs compile time, and
    positions beyond it are not applied, so pass 4 for chains of all four types).
    """
    s = jax.tree.map(jnp.asarray, sources)
    params = jax.tree.map(jnp.asarray, params)
    lengths = jnp.asarray(s.lengths, jnp.int32)
    num_samples = s.speech.shape[-1]
    speech = distortions._mask(jnp.asarray(s.speech, jnp.float32), lengths)
    if use_highpass:
        speech = distortions.highpass(speech, lengths, sample_rate)

    batch = s.speech.shape[0]
    sub_batches = (batch // 4,)

    # --- reverberation (computed only for the rows that use an RIR) ---
    use_rir = params.use_rir & (s.rir_lengths > 0)

    def reverb(x, r):
        return jnp.stack(
            distortions.reverberate(x[:, 0], lengths[r], s.rir[r], s.rir_lengths[r], sample_rate), 1
        )

    pair = jnp.stack([speech, speech], axis=1)  # [B, (noisy, target), T]
    pair = _apply_rows(use_rir, reverb, pair, (batch // 4, batch // 2))
    noisy, target = pair[:, 0], pair[:, 1]

    # --- noise ---
    noise = distortions.align_noise(key, s.noise, s.noise_lengths, lengths, num_samples)
    noise = noise * distortions.snr_scale(noisy, noise, lengths, params.snr_db)[:, None]
    additive = noisy + noise

    p = params

    def wind_mix(x, r):
        return wind.mix_wind_noise(
            x, noise[r], lengths[r], sample_rate, p.wind_threshold[r], p.wind_ratio[r],
            p.wind_attack_ms[r], p.wind_release_ms[r], p.wind_sc_gain[r], p.wind_clipping[r],
            p.wind_clipping_threshold[r], amix_gain=amix_gain,
        )  # fmt: skip

    noisy = jnp.where(params.use_wind[:, None], noisy, additive)
    noisy = _apply_rows(params.use_wind, wind_mix, noisy, sub_batches)

    # --- augmentations, in drawn order: slot by slot, each type masked to its examples ---
    codec_fn = codec.apply_codec if codec_mesh is None else functools.partial(
        codec.apply_codec_sharded, mesh=codec_mesh
    )
    ops = {
        BANDWIDTH: lambda x, r: distortions.bandwidth_limit(
            x, lengths[r], sample_rate, p.bw_method[r], p.bw_fs_new[r]
        ),
        CLIPPING: lambda x, r: distortions.clip_quantiles(x, lengths[r], p.clip_q_min[r], p.clip_q_max[r]),
        PACKET_LOSS: lambda x, r: distortions.packet_loss(x, lengths[r], p.packet_lost[r], sample_rate),
    }
    for slot in range(min(num_aug_slots, MAX_AUGMENTATIONS)):
        for kind in (BANDWIDTH, CLIPPING, CODEC, PACKET_LOSS):
            mask = params.aug_position[:, kind] == slot
            if kind == CODEC:
                # The callback itself skips inactive rows; only skip the call when no row needs it.
                noisy = jax.lax.cond(
                    jnp.any(mask),
                    lambda x, m=mask: codec_fn(
                        x, lengths, params.codec_id, params.codec_qscale, m, sample_rate
                    ),
                    lambda x: x,
                    noisy,
                )
            else:
                noisy = _apply_rows(mask, ops[kind], noisy, sub_batches)

    (target, noisy, noise), gain = distortions.peak_normalize((target, noisy, noise), lengths)
    return Mixture(target, noisy, noise, lengths, gain)


def simulate_batch(key, sources: Sources, sample_rate: int, *, max_num_samples: int | None = None,
                   sim_config: dict | None = None, **simulate_kwargs) -> tuple[Mixture, SimParams]:
    """Draw parameters for every example (one key each) and render them: dynamic mixing in one call.

    When the loader chose the sources (`sources.is_wind` set), the wind and reverberation decisions
    are the loader's: wind where it loaded a wind noise, reverberation where it loaded an RIR.
    """
    params_key, render_key = jax.random.split(key)
    loader_decided = sources.is_wind is not None
    params = sample_batch_params(
        params_key,
        sources.lengths,
        sample_rate=sample_rate,
        max_num_samples=max_num_samples or sources.speech.shape[-1],
        use_wind=sources.is_wind if loader_decided else None,
        use_rir=(jnp.asarray(sources.rir_lengths) > 0) if loader_decided else None,
        **(sim_config or {}),
    )
    simulate_kwargs.setdefault("num_aug_slots", len((sim_config or {}).get("num_aug_probs", (1,) * 4)) - 1)
    return simulate(render_key, sources, params, sample_rate, **simulate_kwargs), params
