"""TF-GridNet (the URGENT 2024/2025 ESPnet baseline, REFERENCE.md §3.6), trained with this repo's loop.

Variants (`--config configs/se/tfgridnet.py:<variant>`):
  urgent25  the 2025 recipe: 6 blocks, BLSTM 200, 4 heads, emb 48, n_fft 256 / hop 128 at 8 kHz (scaled
            with fs); MR-L1 (eps 1e-8); Adam(W) lr 2.5e-4, 4000 warm-up steps then x0.99 every 2 epochs
            of 8000 iterations, clip 1.0, wd 1e-5; batch 2; dynamic mixing (crops: data.max_num_samples)
  urgent24  the 2024 recipe: lr 1e-3 without warm-up, batch 4, pre-simulated data
  tiny      1 block, BLSTM 16, emb 8, dynamic mixing at 16 and 48 kHz: a CPU run
  smoke     a few steps, for tests

Launch:
  python -m urgent_jax.enhance.train --config configs/se/tfgridnet.py:urgent25 --workdir exp/tfgridnet \
      --config.data.sources_dir data/train_sources --config.eval.set_dir data/validation
"""

import os

import ml_collections

from urgent_jax.train.config_file import load_config

BSRNN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bsrnn.py")


def get_config(variant: str | None = None):
    variant = variant or "urgent25"
    if variant not in ("urgent25", "urgent24", "tiny", "smoke"):
        raise ValueError(f"unknown variant {variant!r}: urgent25, urgent24, tiny, smoke")
    c = load_config(f"{BSRNN}:" + {"urgent25": "dm", "urgent24": "baseline"}.get(variant, variant))
    c.model.name = "tfgridnet"
    c.loss.eps = 1e-8
    # the BSRNN sizes go, its precision fields (dtype "auto", param_dtype, use_remat) stay
    precision = {k: c.model.kwargs[k] for k in ("dtype", "param_dtype", "use_remat")}
    if variant == "urgent25":
        c.model.kwargs = ml_collections.ConfigDict(precision)  # registry defaults: recipe sizes
        c.data.batch_size = 2
        c.optim.update(lr=2.5e-4, warmup_steps=4000, gamma=0.99, steps_per_epoch=16000, clip_norm=1.0,
                       weight_decay=1e-5)
    elif variant == "urgent24":
        c.model.kwargs = ml_collections.ConfigDict(precision)
        c.optim.update(lr=1e-3, gamma=0.99, clip_norm=1.0, weight_decay=1e-5)
    elif variant == "tiny":
        c.model.kwargs = ml_collections.ConfigDict(
            {**precision, "num_layers": 1, "lstm_hidden": 16, "emb_dim": 8}
        )
    else:
        c.model.kwargs = ml_collections.ConfigDict(
            {**precision, "num_layers": 1, "lstm_hidden": 8, "emb_dim": 4}
        )
    return c
