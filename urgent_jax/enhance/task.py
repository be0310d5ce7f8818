"""Track 1 task glue: model, data, loss, validation and prediction for the shared train loop.

Discriminative models (BSRNN, TF-GridNet) train with the multi-resolution L1 loss (REFERENCE.md §3.4;
SI-SNR is logged); FlowSE trains with its flow-matching objective and predicts with the Euler
sampler on EMA weights. Data comes from a pre-simulated set or from dynamic mixing; with
`data.mixing == "step"` the batch holds the sources and the simulator runs inside the train step
(on the accelerator), otherwise the loader delivers rendered (noisy, target) pairs.
"""

from __future__ import annotations

import collections
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from urgent_jax import models
from urgent_jax.data.pipeline import make_dynamic_mixing_loader, make_presimulated_loader
from urgent_jax.losses.flow import flow_matching_loss
from urgent_jax.losses.spectral import multi_resolution_l1
from urgent_jax.losses.time_domain import si_snr
from urgent_jax.models import flowse
from urgent_jax.simulation.mixer import Sources, simulate_batch

log = logging.getLogger(__name__)

SOURCE_KEYS = ("speech", "lengths", "noise", "noise_lengths", "rir", "rir_lengths", "is_wind")
PAIR_KEYS = ("noisy", "target", "lengths")
DATA_DIR_KEYS = {"presimulated": "train_dir", "dynamic_mixing": "sources_dir"}  # data.kind -> its key


def check_data_config(d) -> None:
    """Raise a ValueError naming the flag when data.kind's directory (`--config.data.train_dir` /
    `--config.data.sources_dir`, a placeholder in every config) is not given, instead of a
    TypeError deep in the loader."""
    if d.kind not in DATA_DIR_KEYS:
        raise ValueError(f"data.kind must be 'presimulated' or 'dynamic_mixing', got {d.kind!r}")
    key = DATA_DIR_KEYS[d.kind]
    if not d[key]:
        raise ValueError(f"data.kind={d.kind!r} reads its training data from data.{key}: pass "
                         f"--config.data.{key}=DIR")


class EnhancementTask:
    """The `train.loop.Task` of speech enhancement; config sections: model, data, loss, eval."""

    def __init__(self, config):
        self.config = config
        self.model = models.build(config.model.name, **config.model.kwargs.to_dict())
        self.is_flow = isinstance(self.model, flowse.FlowSE)
        self.use_ema = bool(config.train.use_ema)
        self.mix_in_step = config.data.kind == "dynamic_mixing" and config.data.mixing == "step"
        self._train_iterator = None

    # --- data ---

    def train_data(self, seed: int, shard_index: int, shard_count: int):
        d = self.config.data
        check_data_config(d)
        common = dict(
            batch_size=d.batch_size, seed=seed, num_buckets=d.num_buckets, num_workers=d.num_workers,
            shard_index=shard_index, shard_count=shard_count,
        )  # fmt: skip
        if d.kind == "presimulated":
            it = make_presimulated_loader(d.train_dir, max_num_samples=d.max_num_samples,
                                          policy=d.policy, **common)
        else:
            it = make_dynamic_mixing_loader(
                d.sources_dir, max_num_samples=d.max_num_samples, mixing=d.mixing,
                sim_config=d.sim.to_dict(), simulate_kwargs={"use_highpass": d.use_highpass},
                p_wind=d.sim.p_wind, p_reverb=d.sim.p_reverb, policy=d.policy,
                sample_rates=tuple(d.sample_rates) if d.sample_rates else None, **common,
            )  # fmt: skip
        self._train_iterator = it
        return it

    def steps_per_epoch(self) -> int:
        if self._train_iterator is None:
            raise RuntimeError("train_data() must be called first")
        return int(self._train_iterator.plan.batches_per_epoch)

    def example_batch(self):
        """Shapes for initialisation only (the models' parameters do not depend on them)."""
        b = self.config.data.batch_size
        n = 4800
        keys = SOURCE_KEYS if self.mix_in_step else PAIR_KEYS
        batch = {k: np.zeros((b,) if "lengths" in k or k == "is_wind" else (b, n), np.float32) for k in keys}
        return batch, 48000

    def split_batch(self, host: dict):
        keys = SOURCE_KEYS if self.mix_in_step else PAIR_KEYS
        device = {k: np.asarray(host[k]) for k in keys}
        info = {"skipped_files": int(np.sum(host.get("skipped", 0)))}
        return device, int(host["fs"]), info

    def audio_seconds(self, device_batch: dict, sample_rate: int) -> float:
        return float(np.sum(device_batch["lengths"])) / sample_rate

    # --- model ---

    def init_variables(self, key, batch, sample_rate: int):
        del batch  # parameter shapes do not depend on the batch
        return models.init_variables(self.model, key, sample_rate=sample_rate)

    def enhance(self, variables, noisy, lengths, sample_rate: int, key=None, num_steps: int | None = None):
        """Enhanced waveforms [B, T] (FlowSE: Euler sampler with num_steps, default config.eval)."""
        if self.is_flow:
            steps = num_steps or self.config.eval.flow_steps
            key = jax.random.PRNGKey(0) if key is None else key
            return flowse.enhance(self.model, variables, noisy, lengths, sample_rate, key, steps)
        return self.model.apply(variables, noisy, lengths, sample_rate=sample_rate)

    def _pairs(self, batch, key, sample_rate: int):
        """(noisy, target, lengths): rendered here when the step simulates."""
        if not self.mix_in_step:
            return batch["noisy"], batch["target"], batch["lengths"]
        sources = Sources(**{k: batch[k] for k in SOURCE_KEYS})
        d = self.config.data
        mix, _ = simulate_batch(key, sources, sample_rate, sim_config=d.sim.to_dict(),
                                use_highpass=d.use_highpass)
        return mix.noisy, mix.target, mix.lengths

    def loss_fn(self, params, constants, batch, key, sample_rate: int):
        sim_key, model_key = jax.random.split(key)
        noisy, target, lengths = self._pairs(batch, sim_key, sample_rate)
        variables = {"params": params, **constants}
        if self.is_flow:
            loss = flow_matching_loss(self.model, variables, target, noisy, lengths, sample_rate,
                                      model_key)
            return loss, {}
        est = self.model.apply(variables, noisy, lengths, sample_rate=sample_rate)
        lc = self.config.loss
        per_example = multi_resolution_l1(target, est, lengths, window_sizes=tuple(lc.window_sizes),
                                          time_weight=lc.time_weight, eps=lc.eps)
        snr = si_snr(target, est, lengths)
        aux = {"si_snr": jnp.mean(snr)}
        # optional SI-SNR term (not in the reference recipes; 0 there): loss -= w * SI-SNR [dB]
        weight = float(lc.get("si_snr_weight", 0.0))
        if weight:
            per_example = per_example - weight * snr
        return jnp.mean(per_example), aux

    # --- validation ---

    @functools.cached_property
    def _eval_fns(self):
        lc = self.config.loss

        def batch_metrics(variables, noisy, target, lengths, sample_rate, key):
            est = self.enhance(variables, noisy, lengths, sample_rate, key)
            out = {"si_snr": si_snr(target, est, lengths)}
            if self.is_flow:
                out["loss"] = jnp.full(noisy.shape[:1], flow_matching_loss(
                    self.model, variables, target, noisy, lengths, sample_rate, key))
            else:
                out["loss"] = multi_resolution_l1(target, est, lengths,
                                                  window_sizes=tuple(lc.window_sizes),
                                                  time_weight=lc.time_weight, eps=lc.eps)
            return out, est

        return jax.jit(batch_metrics, static_argnames="sample_rate")

    def evaluate(self, params, constants, step: int) -> dict:
        """Validation on the pre-simulated set config.eval.set_dir: loss, SI-SNR and the configured
        metrics (ESTOI, DNSMOS, ...), overall and per sampling rate (`val_<name>_<fs>`)."""
        ec = self.config.eval
        if not ec.set_dir:
            return {}
        from urgent_jax.metrics.registry import get_metric

        metric_fns = {name: get_metric(name).build() for name in ec.metrics}
        loader = make_presimulated_loader(ec.set_dir, batch_size=ec.batch_size, seed=0,
                                          max_num_samples=ec.max_num_samples, num_epochs=1,
                                          drop_remainder=False, num_workers=0, shard_index=0,
                                          shard_count=1)
        variables = {"params": params, **constants}
        values = collections.defaultdict(list)  # (name, fs) -> per-utterance values
        try:
            for i, batch in enumerate(loader):
                if ec.max_batches and i >= ec.max_batches:
                    break
                fs = int(batch["fs"])
                valid = np.asarray(batch["valid"], bool)
                out, est = self._eval_fns(variables, batch["noisy"], batch["target"], batch["lengths"],
                                          sample_rate=fs, key=jax.random.PRNGKey(step))
                out = jax.device_get(out)
                for name, fn in metric_fns.items():
                    scores, _ = fn(batch["target"], np.asarray(est), batch["lengths"], fs)
                    for output, v in scores.items():
                        out[output.lower()] = v
                for name, v in out.items():
                    values[(name, fs)].extend(np.asarray(v, np.float64)[valid].tolist())
        finally:
            loader.close()
        result = {}
        for name in sorted({n for n, _ in values}):
            everything = [v for (n, _), vs in values.items() if n == name for v in vs]
            result[f"val_{name}"] = float(np.nanmean(everything)) if everything else float("nan")
            for (n, fs), vs in sorted(values.items()):
                if n == name:
                    result[f"val_{name}_{fs}"] = float(np.nanmean(vs))
        return result
