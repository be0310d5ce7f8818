"""Uni-VERSA-Ext speech-quality assessment (the URGENT 2026 Track 2 baseline, REFERENCE.md §3.7).

Variants (`--config configs/sqa/universa_ext.py:<variant>`):
  mos_only      WavLM Base+ (frozen) -> 6-layer transformer -> MOS in (1, 5); 20 epochs
  5metric       the same predicting mos, dnsmos_ovrl, scoreq, utmos, nisqa_mos; 5 epochs (the published
                baseline: urgent2024-sqa test utterance SRCC 0.78, system SRCC 0.96)
  22metric      the same predicting the 22 metrics of universa-ext.yaml; 5 epochs
  distillmos_ft the 5 metrics from the Distill-MOS encoder with its shipped weights, fine-tuned
                (works offline, no WavLM checkpoint needed)
  smoke         a minimal conv model for 3-step tests
  tiny          a small conv front-end + 2-layer transformer trained from scratch on labels of the
                metric suite; a few minutes on 2 CPU cores (the quickstart)

Settings shared by the official configs: AdamW lr 3e-5 (β 0.9/0.999, eps 1e-8, weight decay 0.01),
linear warm-up over 2500 updates then linear decay to 0 at the last update, gradient-norm clip 1.0
(non-finite updates skipped), dynamic batches of at most 9,600,000 samples (600 s at 16 kHz) and 128
utterances, seed 42, validation every 1000 updates, inference batches of at most 4,800,000 samples.

WavLM weights: a local Hugging Face directory of microsoft/wavlm-base-plus (config.json and
model.safetensors or pytorch_model.bin), given as --config.model.frontend_weights=DIR.

Launch (data.jsonl paths as `python -m urgent_jax.sqa.prepare --out data` writes them):
  python -m urgent_jax.sqa.train --config configs/sqa/universa_ext.py:5metric --workdir exp/sqa5 \
      --config.data.train_jsonl=data/urgent2024-sqa/train/data.jsonl,data/bvcc/train/data.jsonl \
      --config.eval.jsonl=data/chime-7-udase-eval/test/data.jsonl \
      --config.model.frontend_weights=/models/wavlm-base-plus
  python -m urgent_jax.sqa.infer --workdir exp/sqa5 --data data/chime-7-udase-eval/test/data.jsonl \
      --out exp/sqa5/eval
  python -m urgent_jax.sqa.eval --pred exp/sqa5/eval/results.jsonl \
      --ref data/chime-7-udase-eval/test/data.jsonl
On-the-fly degradation as augmentation (labels kept; off by default): --config.data.degrade.p=0.5
[--config.data.degrade.kinds="('clipping', 'packet_loss')"] (fields: urgent_jax.sqa.data.Degrade).

Expected figures: tiny in `make quickstart` (150 steps, 61 s on 2 CPU cores, 104 training clips: 52 degraded
demo utterances + their clean references): held-out utterance SRCC 0.72 against the DNSMOS OVRL labels
(36 clips, half of them clean references; 0.29 on the 18 degraded clips alone), commit 874d4e9;
0.725 (0.31 on the degraded clips alone) at commit 1ce0a62.
"""

import argparse
import math
import os
import runpy

import ml_collections
from ml_collections import config_dict

from urgent_jax.sqa.data import DEGRADE_DEFAULTS

INF = math.inf
MOS_RANGE = (1.0, 5.0)
# name -> (min, max) of the range activation (REFERENCE.md §3.7); ±inf: open bound.
RANGES = {
    **{n: MOS_RANGE for n in (
        "mos", "dnsmos_ovrl", "scoreq", "utmos", "nisqa_mos", "distill_mos", "sigmos_ovrl",
        "sigmos_col", "sigmos_disc", "sigmos_loud", "sigmos_reverb", "sigmos_sig", "sigmos_noise",
        "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")},
    "lps": (0.0, 1.0), "spksim": (-1.0, 1.0), "sbert": (0.0, 1.0), "mcd": (0.0, INF),
    "sdr": (-INF, INF), "si_sdr": (-INF, INF), "pesq": (1.0, 4.5), "pesqc2": (1.0, 4.5),
    "lsd": (0.0, INF), "estoi": (0.0, 1.0),
}  # fmt: skip
METRICS_5 = ("mos", "dnsmos_ovrl", "scoreq", "utmos", "nisqa_mos")
METRICS_22 = (
    "mos", "dnsmos_ovrl", "scoreq", "utmos", "nisqa_mos", "distill_mos", "sigmos_ovrl", "sigmos_col",
    "sigmos_disc", "sigmos_loud", "sigmos_reverb", "sigmos_sig", "sigmos_noise", "lps", "spksim",
    "sbert", "mcd", "sdr", "pesq", "pesqc2", "lsd", "estoi",
)  # fmt: skip
# What `python -m urgent_jax.sqa.build_dataset` labels with the offline suite (tiny variant).
METRICS_TINY = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "sdr", "si_sdr")


def load_common():
    """configs/common.py as a namespace (configs are loaded by path, not imported)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "common.py")
    return argparse.Namespace(**runpy.run_path(path))


def metric_kwargs(names) -> dict:
    return dict(metric_names=tuple(names), metric_ranges=tuple(RANGES[n] for n in names))


def get_config(variant: str | None = None):
    variant = variant or "5metric"
    common = load_common()
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(
        name="universa_ext",
        kwargs=ml_collections.ConfigDict(dict(
            frontend="wavlm", d_model=768, num_layers=6, num_heads=8, ffn_dim=2048, dropout=0.1,
            # ((field, value), ...) of the front-end; a WavLM checkpoint's do_normalize is added
            # from its preprocessor_config.json (urgent_jax.sqa.task)
            frontend_kwargs=(),
            **metric_kwargs(METRICS_5))),
        freeze_frontend=True,  # official: the SSL model gets no gradient
        frontend_weights=config_dict.placeholder(str),  # HF WavLM dir | "shipped" (Distill-MOS)
        loss_weights=config_dict.placeholder(tuple),  # per metric; None: all 1 (official)
    ))  # fmt: skip
    c.data = ml_collections.ConfigDict(dict(
        train_jsonl=(),  # Track 2 data.jsonl files
        max_total_samples=9_600_000,  # per batch, at 16 kHz (600 s)
        max_batch_size=128,
        max_duration_s=config_dict.placeholder(float),  # drop longer items (None: only the cap)
        num_buckets=8,  # padded lengths (compiled shapes) per batch size, train and validation
        num_workers=2,
        # On-the-fly degradation, `Degrade` keyword arguments (urgent_jax.sqa.data); p = 0: off.
        degrade=ml_collections.ConfigDict(DEGRADE_DEFAULTS),
    ))  # fmt: skip
    c.optim = common.optim_config(lr=3e-5, weight_decay=0.01, clip_norm=1.0, schedule="linear",
                                  warmup_steps=2500)
    c.train = common.train_config(seed=42, num_epochs=5, log_every=50, eval_every=1000,
                                  checkpoint_every=1000, best_metric="val_loss", best_mode="min")
    c.eval = ml_collections.ConfigDict(dict(
        jsonl=(),  # validation data.jsonl files (official: CHiME-7 UDASE eval)
        max_total_samples=4_800_000,
        max_batch_size=128,
    ))  # fmt: skip
    if variant == "mos_only":
        c.model.kwargs.update(metric_kwargs(("mos",)))
        c.train.num_epochs = 20
    elif variant == "5metric":
        pass
    elif variant == "22metric":
        c.model.kwargs.update(metric_kwargs(METRICS_22))
    elif variant == "distillmos_ft":
        c.model.kwargs.frontend = "distillmos"
        c.model.freeze_frontend = False
        c.model.frontend_weights = "shipped"
    elif variant == "tiny":
        c.model.kwargs.update(dict(frontend="conv", frontend_kwargs=(("channels", 128),), d_model=64,
                                   num_layers=2, num_heads=4, ffn_dim=128, dropout=0.1,
                                   **metric_kwargs(METRICS_TINY)))
        c.model.freeze_frontend = False
        # dB-scale metrics have ~50x the variance of MOS-scale ones: balance the loss terms.
        c.model.loss_weights = tuple(0.02 if n in ("sdr", "si_sdr") else 1.0 for n in METRICS_TINY)
        c.data.max_total_samples = 16 * 16000 * 4  # 16 clips of 4 s
        c.data.max_batch_size = 16
        c.data.num_buckets = 2
        c.data.num_workers = 0
        c.optim.lr = 1e-3
        c.optim.warmup_steps = 10
        c.optim.weight_decay = 1e-4
        c.train.num_steps = 150  # the linear schedule decays to 0 here
        c.train.max_train_s = 150.0
        c.train.log_every = 10
        c.train.eval_every = 0
        c.train.checkpoint_every = 200
        c.eval.max_total_samples = 16 * 16000 * 8
        c.eval.max_batch_size = 16
    elif variant == "smoke":
        c.model.kwargs.update(dict(frontend="conv", d_model=16, num_layers=1, num_heads=2,
                                   ffn_dim=32, dropout=0.0, **metric_kwargs(METRICS_TINY)))
        c.model.freeze_frontend = False
        c.data.max_total_samples = 4 * 16000 * 2
        c.data.max_batch_size = 4
        c.data.num_buckets = 1
        c.data.num_workers = 0
        c.optim.lr = 1e-3
        c.optim.warmup_steps = 1
        c.train.num_steps = 3
        c.train.log_every = 1
        c.train.eval_every = 3
        c.train.checkpoint_every = 3
        c.train.use_tensorboard = False
        c.train.progress_bar = False
        c.eval.max_total_samples = 4 * 16000 * 4
        c.eval.max_batch_size = 4
    else:
        raise ValueError(f"unknown variant {variant!r}: mos_only, 5metric, 22metric, distillmos_ft, "
                         "tiny, smoke")
    return c
