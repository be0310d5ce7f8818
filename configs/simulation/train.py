"""Simulation settings of the official Track 1 training set (conf/simulation_train.yaml, REFERENCE.md §2.1).

    python -m urgent_jax.simulation.generate_params --sources data/train_sources \
        --out simulation_train/log/meta.tsv --config configs/simulation/train.py --seed 0

`sample_params` keys equal `urgent_jax.simulation.params.sample_params` arguments; `selection` keys
equal `generate_params.generate_meta` arguments.
"""

import ml_collections


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.sample_params = ml_collections.ConfigDict(
        dict(
            p_wind=0.05,
            snr_db=(-5.0, 20.0),
            wind_snr_db=(-10.0, 15.0),
            p_reverb=0.5,
            num_aug_probs=(0.25, 0.40, 0.20, 0.15),
            aug_weights=(1.0, 1.0, 1.0, 1.0),  # bandwidth_limitation, clipping, codec, packet_loss
            resample_methods=("kaiser_best", "kaiser_fast", "scipy", "polyphase"),
            clip_min_quantile=(0.0, 0.1),
            clip_max_quantile=(0.9, 1.0),
            codec_formats=("mp3", "ogg"),
            ogg_encoders=("vorbis", "opus"),
            mp3_qscale=(1, 10),
            ogg_qscale=(-1, 10),
            packet_duration_ms=20,
            packet_loss_rate=(0.05, 0.25),
            max_continuous_packet_loss=10,
            wind_threshold=(0.1, 0.3),
            wind_ratio=(1.0, 20.0),
            wind_attack_ms=(5.0, 100.0),
            wind_release_ms=(5.0, 100.0),
            wind_sc_gain=(0.8, 1.2),
            wind_clipping_threshold=(0.85, 1.0),
            p_wind_clipping=0.75,
        )
    )
    c.selection = ml_collections.ConfigDict(
        dict(reuse_noise=True, reuse_rir=True, repeat_per_utt=1, store_noise=False, out_format="flac")
    )
    return c
