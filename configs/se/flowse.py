"""BSRNN-FlowSE generative enhancement (URGENT 2026 Track 1 generative baseline, REFERENCE.md §3.3, §3.5).

Variants (`--config configs/se/flowse.py:<variant>`):
  baseline  official BSRNN_flowse.yaml: N=384, 6 layers, pre-simulated data, batch 2, AdamW 1e-4,
            StepLR x0.85/epoch, 80 epochs, clip 0.5, EMA (torch-ema warm-up, decay 0.999), seed 20250,
            validation (flow loss + SI-SNR of a 10-step Euler enhancement) every 5000 steps
  dm        the same with dynamic mixing from the source lists
  tiny      N=32, 2 layers, dynamic mixing at 16 and 48 kHz: a CPU run
  smoke     a few steps of a minimal model, for tests

Launch:
  python -m urgent_jax.enhance.train --config configs/se/flowse.py:baseline --workdir exp/flowse \
      --config.data.train_dir data/train_simulation --config.eval.set_dir data/validation
  python -m urgent_jax.enhance.infer --workdir exp/flowse --input_scp data/validation/wav.scp \
      --output_dir exp/flowse/enhanced --num_steps 15
"""

import os

from urgent_jax.train.config_file import load_config

BSRNN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bsrnn.py")


def get_config(variant: str | None = None):
    variant = variant or "baseline"
    if variant not in ("baseline", "dm", "tiny", "smoke"):
        raise ValueError(f"unknown variant {variant!r}: baseline, dm, tiny, smoke")
    # Start from the BSRNN variant of the same name (data, loop, optimiser layout), then differ.
    c = load_config(f"{BSRNN}:{variant}")
    c.model.name = "flowse"
    if variant in ("baseline", "dm"):
        c.model.kwargs.update(num_channels=384, num_layers=6)  # dtype fields: bsrnn.py's
        c.data.batch_size = 2
        c.optim.lr = 1e-4
        c.train.seed = 20250
        c.eval.metrics = ("estoi",)
    c.train.use_ema = True
    c.eval.flow_steps = 10
    return c
