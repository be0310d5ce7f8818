"""Track 2 task glue: the Uni-VERSA-Ext regressor, data.jsonl batches, the NaN-masked multi-metric
loss, pretrained front-ends and correlation validation for the shared train loop (train/loop.py).

A frozen front-end (`model.freeze_frontend`, the official WavLM setting, REFERENCE.md §3.7) is moved
out of the optimiser's parameters into the constant collection "frozen" — no gradients, no AdamW
state, no weight decay — and merged back for every apply. Pretrained front-end weights
(`model.frontend_weights`: a Hugging Face WavLM directory, or "shipped" for Distill-MOS) are loaded
into the fresh state by `load_pretrained`; a resumed run takes them from its checkpoint. A WavLM
directory's input normalisation (preprocessor_config.json `do_normalize`) is written into
model.kwargs.frontend_kwargs when the task is made (`record_checkpoint_preprocessing`), so the
model normalises as the checkpoint expects, in training and in inference from config.json.
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from urgent_jax import models
from urgent_jax.losses.sqa import masked_mse
from urgent_jax.metrics.correlation import utterance_and_system_stats
from urgent_jax.models.sqa import make_predict
from urgent_jax.models.wavlm import WavLMConfig
from urgent_jax.sqa.data import make_sqa_loader

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz; every Track 2 input is resampled to it
DEVICE_KEYS = ("audio", "lengths", "labels", "valid")
FROZEN = "frozen"  # constant collection holding a frozen front-end


def merge_variables(params: dict, constants: dict) -> dict:
    """The model's variables from trainable params and constants (frozen front-end merged back)."""
    constants = dict(constants or {})
    frozen = constants.pop(FROZEN, None)
    params = dict(params)
    if frozen is not None:
        params["frontend"] = jax.lax.stop_gradient(frozen["frontend"])
    return {"params": params, **constants}


def record_checkpoint_preprocessing(config) -> None:
    """Put a WavLM checkpoint directory's input normalisation (`do_normalize` of its
    preprocessor_config.json, `WavLMConfig.from_pretrained`) into
    config.model.kwargs.frontend_kwargs, unless they set do_normalize already: the model then
    normalises its input as the checkpoint's feature extractor does, and config.json records it
    for inference (which does not read the checkpoint directory again)."""
    m = config.model
    source = m.frontend_weights
    if m.kwargs.get("frontend") != "wavlm" or not source or source == "shipped":
        return
    if not os.path.exists(os.path.join(source, "config.json")) and not os.path.isfile(source):
        return  # load_pretrained reports the missing checkpoint
    frontend_kwargs = dict(m.kwargs.get("frontend_kwargs") or ())
    if "do_normalize" in frontend_kwargs:
        return
    do_normalize = WavLMConfig.from_pretrained(source).do_normalize
    frontend_kwargs["do_normalize"] = do_normalize
    with m.kwargs.ignore_type(), m.kwargs.unlocked():
        m.kwargs.frontend_kwargs = tuple(frontend_kwargs.items())
    log.info("WavLM checkpoint %s: do_normalize=%s (per-utterance input normalisation)", source,
             do_normalize)


def jsonl_paths(value) -> list[str]:
    """The data.jsonl files of a config field: a tuple of paths, each possibly comma-joined.
    `--config.data.train_jsonl=a.jsonl,b.jsonl` reaches the config as the one-element tuple
    ("a.jsonl,b.jsonl",) (ml_collections keeps a string that is no Python literal whole)."""
    if isinstance(value, str | os.PathLike):
        value = (value,)
    return [p for entry in value for p in os.fspath(entry).split(",") if p]


def warn_missing_labels(labels: np.ndarray, metric_names) -> None:
    """Warn about training labels [N, M] (NaN: missing) that cannot train the model: a metric
    labelled in no item (its head gets no gradient) and items labelled in none of the metrics
    (e.g. MOS-only data for a model without a `mos` head; they only cost time)."""
    has_label = ~np.isnan(labels)
    unlabelled_metrics = [n for n, ok in zip(metric_names, has_label.any(axis=0)) if not ok]
    if unlabelled_metrics:
        log.warning("data.train_jsonl has no label for metric(s) %s of the model: their heads "
                    "are not trained", unlabelled_metrics)  # fmt: skip
    num_unlabelled = int((~has_label.any(axis=1)).sum())
    if num_unlabelled:
        log.warning("%d of %d training items have no label for any of the model's metrics %s "
                    "(loss 0 on them)", num_unlabelled, len(labels), tuple(metric_names))


class SqaTask:
    """The `train.loop.Task` of quality assessment; config sections: model, data, eval."""

    use_ema = False

    def __init__(self, config):
        self.config = config
        record_checkpoint_preprocessing(config)
        kwargs = config.model.kwargs.to_dict()
        self.model = models.build(config.model.name, **kwargs)
        self.metric_names = tuple(self.model.metric_names)
        self.freeze_frontend = bool(config.model.freeze_frontend)
        weights = config.model.loss_weights
        self.loss_weights = None if weights is None else jnp.asarray(weights, jnp.float32)
        if weights is not None and len(weights) != len(self.metric_names):
            raise ValueError(f"model.loss_weights has {len(weights)} values for "
                             f"{len(self.metric_names)} metrics {self.metric_names}")
        self._train_iterator = None

    # --- data ---

    def train_data(self, seed: int, shard_index: int, shard_count: int):
        d = self.config.data
        if not d.train_jsonl:
            raise ValueError("data.train_jsonl is empty: give one or more Track 2 data.jsonl files")
        self._train_iterator = make_sqa_loader(
            jsonl_paths(d.train_jsonl), self.metric_names, max_total_samples=d.max_total_samples,
            max_batch_size=d.max_batch_size, seed=seed, num_epochs=None, shuffle=True,
            shard_index=shard_index, shard_count=shard_count, num_workers=d.num_workers,
            max_duration_s=d.max_duration_s, degrade=_as_kwargs(d.degrade),
            num_buckets=d.num_buckets,
        )  # fmt: skip
        warn_missing_labels(self._train_iterator.source.labels[:-1], self.metric_names)
        return self._train_iterator

    def steps_per_epoch(self) -> int:
        if self._train_iterator is None:
            raise RuntimeError("train_data() must be called first")
        return int(self._train_iterator.plan.batches_per_epoch)

    def example_batch(self):
        """Shapes for initialisation only (parameters do not depend on them)."""
        b, n, m = 2, SAMPLE_RATE, len(self.metric_names)
        batch = {"audio": np.zeros((b, n), np.float32), "lengths": np.full((b,), n, np.int32),
                 "labels": np.zeros((b, m), np.float32), "valid": np.ones((b,), bool)}
        return batch, SAMPLE_RATE

    def split_batch(self, host: dict):
        device = {k: np.asarray(host[k]) for k in DEVICE_KEYS}
        return device, SAMPLE_RATE, {"skipped_files": int(np.sum(host.get("skipped", 0)))}

    def audio_seconds(self, device_batch: dict, sample_rate: int) -> float:
        lengths = np.asarray(device_batch["lengths"])[np.asarray(device_batch["valid"], bool)]
        return float(np.sum(lengths)) / sample_rate

    # --- model ---

    def init_variables(self, key, batch, sample_rate: int):
        del sample_rate
        params_key, dropout_key = jax.random.split(key)
        variables = dict(self.model.init({"params": params_key, "dropout": dropout_key},
                                         batch["audio"], batch["lengths"], train=False))
        if self.freeze_frontend:
            params = dict(variables["params"])
            variables[FROZEN] = {"frontend": params.pop("frontend")}
            variables["params"] = params
        return variables

    def load_pretrained(self, state):
        """Put the configured pretrained front-end into a fresh state (shardings kept): its
        parameters (trainable or frozen) and any other collection it brings (BatchNorm statistics,
        buffers) under that collection's "frontend" entry."""
        source = self.config.model.frontend_weights
        if not source:
            return state
        from urgent_jax.models.sqa import load_frontend

        loaded = load_frontend(self.model.frontend, None if source == "shipped" else source)
        what = f"{self.model.frontend} front-end weights from {source}"
        constants = dict(state.constants)
        if self.freeze_frontend:
            new = _placed_like(constants[FROZEN]["frontend"], loaded["params"], what)
            constants[FROZEN] = {"frontend": new}
        else:
            new = _placed_like(state.params["frontend"], loaded["params"], what)
            state = state.replace(params={**state.params, "frontend": new})
        for collection, tree in loaded.items():
            if collection == "params":
                continue
            if collection not in constants or "frontend" not in constants[collection]:
                raise ValueError(f"{what}: the model has no {collection!r} collection for the front-end")
            placed = _placed_like(constants[collection]["frontend"], tree, f"{what} ({collection})")
            constants[collection] = {**constants[collection], "frontend": placed}
        state = state.replace(constants=constants)
        log.info("loaded pretrained %s (%s)", what, "frozen" if self.freeze_frontend else "fine-tuned")
        return state

    def loss_fn(self, params, constants, batch, key, sample_rate: int):
        del sample_rate
        variables = merge_variables(params, constants)
        pred = self.model.apply(variables, batch["audio"], batch["lengths"], train=True,
                                rngs={"dropout": key})
        loss, per_metric = masked_mse(pred, batch["labels"], batch["valid"], self.loss_weights)
        aux = {f"loss_{name}": jnp.nan_to_num(per_metric[i], nan=0.0)
               for i, name in enumerate(self.metric_names)}
        return loss, aux

    # --- prediction and validation ---

    @functools.cached_property
    def _predict_jit(self):
        return make_predict(self.model)

    def predict(self, variables: dict, audio, lengths) -> np.ndarray:
        """Predictions [B, M] (range-activated) for 16 kHz audio [B, T] with lengths [B]."""
        return np.asarray(jax.device_get(self._predict_jit(variables, audio, lengths)))

    def predict_loader(self, variables: dict, loader) -> list[dict]:
        """{"sample_id", "system_id", "metrics", "labels"} for every valid row the loader yields."""
        records = []
        for batch in loader:
            pred = self.predict(variables, batch["audio"], batch["lengths"])
            for i in np.flatnonzero(np.asarray(batch["valid"], bool)):
                records.append({
                    "sample_id": str(batch["sample_id"][i]), "system_id": str(batch["system_id"][i]),
                    "metrics": {n: float(pred[i, j]) for j, n in enumerate(self.metric_names)},
                    "labels": np.asarray(batch["labels"][i], np.float64),
                })  # fmt: skip
        return records

    def evaluate(self, params, constants, step: int) -> dict:
        """Validation on config.eval.jsonl: NaN-masked MSE (`val_loss`) and, per metric with labels,
        utterance / system MSE, LCC, SRCC and KTAU (`val_<metric>_{utt,sys}_<stat>`). As in the
        official CV, a metric with any NaN reference or prediction gets NaN statistics."""
        ec = self.config.eval
        if not ec.jsonl:
            return {}
        loader = make_sqa_loader(jsonl_paths(ec.jsonl), self.metric_names,
                                 max_total_samples=ec.max_total_samples,
                                 max_batch_size=ec.max_batch_size, seed=0, num_epochs=1,
                                 shuffle=False, num_workers=0,
                                 num_buckets=self.config.data.num_buckets)
        try:
            records = self.predict_loader(merge_variables(params, constants), loader)
        finally:
            loader.close()
        if not records:
            return {}
        pred = np.array([[r["metrics"][n] for n in self.metric_names] for r in records])
        labels = np.stack([r["labels"] for r in records])
        loss, _ = masked_mse(jnp.asarray(pred, jnp.float32), jnp.asarray(labels, jnp.float32),
                             jnp.ones(len(records), bool), self.loss_weights)
        result = {"val_loss": float(loss)}
        systems = [r["system_id"] for r in records]
        for j, name in enumerate(self.metric_names):
            if np.all(np.isnan(labels[:, j])):
                continue
            utt, sys_ = utterance_and_system_stats(pred[:, j], labels[:, j], systems,
                                                   nan_policy="propagate")
            for level, stats in (("utt", utt), ("sys", sys_)):
                for stat in ("MSE", "LCC", "SRCC", "KTAU"):
                    result[f"val_{name}_{level}_{stat.lower()}"] = stats[stat]
        return result


def _as_kwargs(section) -> dict | None:
    """A config section (ConfigDict, dict or None: a config.json of an older run) as a dict."""
    if section is None:
        return None
    return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def _placed_like(old, new, what: str):
    """`new` (numpy tree) as device arrays with `old`'s structure, dtypes and shardings."""
    old_def, new_def = jax.tree.structure(old), jax.tree.structure(new)
    if old_def != new_def:
        raise ValueError(f"{what}: parameter tree does not match the model's front-end "
                         f"({new_def.num_leaves} leaves vs {old_def.num_leaves})")

    def put(o, n):
        n = np.asarray(n)
        if n.shape != o.shape:
            raise ValueError(f"{what}: shape {n.shape} where the model has {o.shape}")
        return jax.device_put(n.astype(o.dtype), o.sharding)

    return jax.tree.map(put, old, new)
