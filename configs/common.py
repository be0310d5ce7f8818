"""Shared config sections (train loop, optimiser, data, evaluation) for every experiment family.

Config keys equal function arguments: `optim` -> urgent_jax.train.optim.make_optimizer, `data.sim` ->
urgent_jax.simulation.params.sample_params, `loss` -> urgent_jax.losses.spectral.multi_resolution_l1.
Experiment files load this module by path (`load_common()`), then override what differs.
"""

import ml_collections
from ml_collections import config_dict


def model_kwargs(**sizes) -> ml_collections.ConfigDict:
    """Enhancement-model kwargs, `models.build(config.model.name, **kwargs)`: sizes plus precision.

    dtype: compute dtype, "auto" (bfloat16 on GPU/TPU, float32 on CPU), "float32" or "bfloat16";
    models.build resolves the name; STFT and losses stay float32 whatever it is. param_dtype:
    storage dtype of the parameters. use_remat: recompute the dual-path / GridNet blocks in the
    backward pass.
    """
    precision = {"dtype": "auto", "param_dtype": "float32", "use_remat": False}
    return ml_collections.ConfigDict({**sizes, **precision})


def train_config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(
        dict(
            seed=2024,
            num_steps=0,  # 0: num_epochs x steps per epoch
            num_epochs=80,
            log_every=50,
            eval_every=5000,
            checkpoint_every=5000,
            keep_last=3,
            keep_best=5,
            best_metric="val_loss",
            best_mode="min",
            num_fsdp=1,  # devices per FSDP group (mesh axes: data x fsdp)
            use_ema=False,
            use_tensorboard=True,
            progress_bar=True,
            max_train_s=0.0,  # wall-clock budget in seconds (0: none); the loop saves and stops
            coordinator_address=config_dict.placeholder(str),  # multi-process runs without auto-detect
            num_processes=config_dict.placeholder(int),
            process_id=config_dict.placeholder(int),
            distributed_timeout_s=300,  # wait for every process at start-up, then abort
        )
    )
    c.update(overrides)
    return c


def optim_config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(
        dict(
            lr=1e-3,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=1e-6,
            clip_norm=0.5,
            schedule="step_decay",
            steps_per_epoch=0,  # 0: batches per epoch of the training data
            gamma=0.85,
            warmup_steps=0,
            total_steps=0,
        )
    )
    c.update(overrides)
    return c


def sim_config(**overrides) -> ml_collections.ConfigDict:
    """Dynamic-mixing parameter distribution (official DM: validation encoders, i.e. Vorbis only)."""
    c = ml_collections.ConfigDict(
        dict(
            p_wind=0.05,
            snr_db=(-5.0, 20.0),
            wind_snr_db=(-10.0, 15.0),
            p_reverb=0.5,
            num_aug_probs=(0.25, 0.40, 0.20, 0.15),
            aug_weights=(1.0, 1.0, 1.0, 1.0),
            ogg_encoders=("vorbis",),
        )
    )
    c.update(overrides)
    return c


def data_config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(
        dict(
            kind="presimulated",  # presimulated | dynamic_mixing
            train_dir=config_dict.placeholder(str),  # pre-simulated set (wav.scp, spk1.scp, utt2fs)
            sources_dir=config_dict.placeholder(str),  # dynamic mixing: train_sources/
            mixing="loader",  # dynamic mixing on the host (loader) or in the train step (step)
            batch_size=4,
            max_num_samples=96000,  # crop, in samples whatever the rate (official)
            sample_rates=config_dict.placeholder(tuple),  # dynamic mixing: only speech at these rates
            num_buckets=8,
            num_workers=2,
            policy="skip",
            use_highpass=True,
            sim=sim_config(),
        )
    )
    c.update(overrides)
    return c


def eval_config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(
        dict(
            set_dir=config_dict.placeholder(str),  # pre-simulated validation set
            metrics=("estoi",),  # registry names computed on top of loss and SI-SNR
            batch_size=4,
            max_batches=0,  # 0: the whole set
            max_num_samples=config_dict.placeholder(int),  # None: full length (official)
            flow_steps=10,  # FlowSE sampler steps during validation (official log: 10)
        )
    )
    c.update(overrides)
    return c
