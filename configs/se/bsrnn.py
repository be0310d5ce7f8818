"""BSRNN speech enhancement (the URGENT 2026 Track 1 discriminative baseline, REFERENCE.md §3.2, §3.5).

Variants (`--config configs/se/bsrnn.py:<variant>`):
  baseline  official BSRNN_baseline.yaml: N=196, 6 layers, pre-simulated data, batch 4, AdamW 1e-3,
            StepLR x0.85/epoch, 80 epochs, clip 0.5, validation + top-5 checkpoints every 5000 steps
  dm        BSRNN_baseline_dm.yaml: the same with dynamic mixing from the source lists
  tiny      a small model for CPU runs (N=32, 2 layers) with dynamic mixing at 16 and 48 kHz for at most
            8 minutes, loss with an SI-SNR term (loss.si_snr_weight), fast step decay and EMA weights;
            used by the quickstart
  smoke     a few steps of a minimal model, for tests

Expected figures: tiny in `make quickstart` (480 s of training on 2 CPU cores, 384 steps): SI-SDR
0.50 -> 3.54 dB on the demo validation set (+3.05 dB), commit 484ad97 (370 steps gave +2.95 dB).
baseline: 37,800,844 parameters; on a 2-core CPU 12.3 s per step at batch 1 x 2 s, 16 kHz (0.16 audio-s/s, loader mixing).

Launch:
  python -m urgent_jax.enhance.train --config configs/se/bsrnn.py:baseline --workdir exp/bsrnn \
      --config.data.train_dir data/train_simulation --config.eval.set_dir data/validation
  python -m urgent_jax.enhance.train --config configs/se/bsrnn.py:dm --workdir exp/bsrnn_dm \
      --config.data.sources_dir data/train_sources --config.eval.set_dir data/validation
  python -m urgent_jax.enhance.train --config configs/se/bsrnn.py:tiny --workdir exp/tiny \
      --config.data.sources_dir runs/quickstart/corpus/train_sources \
      --config.eval.set_dir runs/quickstart/validation
"""

import argparse
import os
import runpy

import ml_collections


def load_common():
    """configs/common.py as a namespace (configs are loaded by path, not imported)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "common.py")
    return argparse.Namespace(**runpy.run_path(path))


def get_config(variant: str | None = None):
    variant = variant or "baseline"
    common = load_common()
    c = ml_collections.ConfigDict()
    # model.kwargs: sizes plus dtype ("auto": bf16 on GPU/TPU), param_dtype, use_remat
    c.model = ml_collections.ConfigDict(
        {"name": "bsrnn", "kwargs": common.model_kwargs(num_channels=196, num_layers=6)}
    )
    c.data = common.data_config()
    # si_snr_weight: an optional -w * SI-SNR [dB] term on top of the reference loss (0 = reference)
    c.loss = ml_collections.ConfigDict(dict(window_sizes=(256, 512, 768, 1024), time_weight=0.5,
                                            eps=1e-6, si_snr_weight=0.0))
    c.optim = common.optim_config()
    c.train = common.train_config()
    c.eval = common.eval_config(metrics=("estoi", "dnsmos"))
    if variant == "baseline":
        pass
    elif variant == "dm":
        c.data.kind = "dynamic_mixing"
    elif variant == "tiny":
        c.model.kwargs.update(num_channels=32, num_layers=2)
        c.data.kind = "dynamic_mixing"
        c.data.sample_rates = (16000, 48000)  # two compiles; the 48 kHz items train every band
        c.data.batch_size = 8
        c.data.max_num_samples = 24000
        c.data.num_buckets = 1
        c.data.num_workers = 0
        c.train.num_steps = 3000
        c.train.max_train_s = 480.0
        c.train.log_every = 10
        c.train.eval_every = 0
        c.train.checkpoint_every = 100
        c.train.use_ema = True  # torch-ema warm-up decay: averages about the last 30 steps here
        c.optim.lr = 4e-3
        c.optim.warmup_steps = 20
        c.optim.steps_per_epoch = 40  # x0.85 every 40 steps: about x0.25 over an 8-minute run
        # an SI-SNR term: on the demo validation set +0.19 dB SI-SDR (15 of 20 items better) than the
        # reference loss alone at the same training time
        c.loss.si_snr_weight = 2000.0
        c.eval.metrics = ()
    elif variant == "smoke":
        c.model.kwargs.update(num_channels=8, num_layers=1)
        c.data.kind = "dynamic_mixing"
        c.data.batch_size = 2
        c.data.max_num_samples = 8000
        c.data.num_buckets = 1
        c.data.num_workers = 0
        c.train.num_steps = 3
        c.train.log_every = 1
        c.train.eval_every = 0
        c.train.checkpoint_every = 1
        c.train.use_tensorboard = False
        c.train.progress_bar = False
        c.optim.steps_per_epoch = 100
        c.eval.metrics = ()
    else:
        raise ValueError(f"unknown variant {variant!r}: baseline, dm, tiny, smoke")
    return c
