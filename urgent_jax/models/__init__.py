"""Model registry: `build(name, **overrides) -> flax.linen.Module`.

Names (defaults are the official sizes; any dataclass field can be overridden):
  bsrnn         discriminative BSRNN baseline, N = 196, 6 layers (37,800,844 parameters)
  bsrnn_causal  BSRNN with a unidirectional time LSTM and per-frame norms (cLN): causal end to end
  flowse        BSRNN-FlowSE vector field, N = 384, 6 layers (≈103.2 M incl. 1,152 fixed weights)
  tfgridnet     TF-GridNet (urgent_jax.models.tfgridnet, imported on first use)
  universa_ext  Track 2 Uni-VERSA-Ext SQA regressor (urgent_jax.models.sqa): WavLM / Distill-MOS /
                conv front-end, 16 kHz audio -> one value per metric

Precision: `dtype` (compute) and `param_dtype` may be given as names, as configs do: "float32",
"bfloat16", "float16", or for dtype "auto" = bfloat16 on GPU/TPU and float32 on CPU (the backend
`build` runs on); `build` resolves them to jnp dtypes. The STFT front-end and the losses stay
float32 whatever the compute dtype.

Test sizes: `build(name, **TINY[name])`. `init_variables(model, key)` initialises any of them with
small dummy inputs; wrap it in `jax.eval_shape` for shapes only. `load_variables(path)` reads
variables written by `python -m urgent_jax.models.convert` (or any msgpack of them).
"""

from __future__ import annotations

import importlib
from typing import Any

import jax
import jax.numpy as jnp

# name -> (module path, class name, default overrides)
_MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bsrnn": ("urgent_jax.models.bsrnn", "BSRNN", {}),
    "bsrnn_causal": ("urgent_jax.models.bsrnn", "BSRNN", {"is_causal": True, "norm_type": "cLN"}),
    "flowse": ("urgent_jax.models.flowse", "FlowSE", {}),
    "tfgridnet": ("urgent_jax.models.tfgridnet", "TFGridNet", {}),
    "universa_ext": ("urgent_jax.models.sqa", "UniVersaExt", {}),
}

# Overrides giving CPU-test sizes for each name.
TINY: dict[str, dict[str, Any]] = {
    "bsrnn": {"num_channels": 16, "num_layers": 2},
    "bsrnn_causal": {"num_channels": 16, "num_layers": 2},
    "flowse": {"num_channels": 16, "num_layers": 2},
    "tfgridnet": {"num_layers": 1, "lstm_hidden": 16, "emb_dim": 8},
    "universa_ext": {
        "frontend": "conv",
        "frontend_kwargs": (("channels", 16),),
        "d_model": 16,
        "num_layers": 1,
        "num_heads": 2,
        "ffn_dim": 32,
    },
}


def names() -> tuple[str, ...]:
    """Registered model names."""
    return tuple(_MODELS)


def model_class(name: str) -> type:
    """The linen Module class registered under name (imports its module on first use)."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(_MODELS)}")
    module_path, class_name, _ = _MODELS[name]
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as err:
        if err.name != module_path:
            raise
        raise ImportError(
            f"model {name!r} needs {module_path}, which is not available yet"
        ) from err
    if not hasattr(module, class_name):
        raise ImportError(f"model {name!r}: {module_path} defines no {class_name}")
    return getattr(module, class_name)


DTYPE_NAMES = ("float32", "bfloat16", "float16")  # names a dtype field accepts, plus "auto"


def resolve_dtype(value, backend: str | None = None, field: str = "dtype"):
    """A dtype field given by name -> jnp dtype; dtypes (and None) pass through unchanged.

    "auto" (the compute `dtype` field only): bfloat16 on an accelerator (`backend`, default
    jax.default_backend(), not "cpu"), float32 on CPU.
    """
    allow_auto = field == "dtype"
    if not isinstance(value, str):
        return value
    if value == "auto" and allow_auto:
        backend = backend or jax.default_backend()
        return jnp.dtype(jnp.float32 if backend == "cpu" else jnp.bfloat16)
    if value not in DTYPE_NAMES:
        allowed = ("auto",) * allow_auto + DTYPE_NAMES
        raise ValueError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")
    return jnp.dtype(value)


def build(name: str, **overrides):
    """Instantiate the registered model with the name's defaults updated by `overrides`.

    `dtype` / `param_dtype` given as names are resolved by `resolve_dtype` ("auto" for dtype only).
    """
    cls = model_class(name)
    fields = set(getattr(cls, "__dataclass_fields__", {})) - {"parent", "name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"{name}: unknown fields {unknown}; fields are {sorted(fields)}")
    for field in ("dtype", "param_dtype"):
        if field in overrides:
            overrides[field] = resolve_dtype(overrides[field], field=field)
    return cls(**{**_MODELS[name][2], **overrides})


def example_inputs(
    model, sample_rate: int = 48000, batch_size: int = 1, num_samples: int | None = None
):
    """(args, kwargs) that `model.init`/`model.apply` accept; waveform models get 0.1 s of zeros."""
    if hasattr(model, "example_inputs"):
        return model.example_inputs(sample_rate, batch_size, num_samples)
    num_samples = num_samples or sample_rate // 10
    noisy = jnp.zeros((batch_size, num_samples), jnp.float32)
    lengths = jnp.full((batch_size,), num_samples, jnp.int32)
    return (noisy, lengths), {"sample_rate": sample_rate}


def load_variables(path) -> dict:
    """Plain variables {'params': ..., ...} from a msgpack file or a `models.convert` output folder.

    A folder holds variables.msgpack and model.json; use `convert.load_converted` to also rebuild
    the model with the sizes recorded there.
    """
    from pathlib import Path

    from flax import serialization

    path = Path(path)
    if path.is_dir():
        path = path / "variables.msgpack"
    return serialization.msgpack_restore(path.read_bytes())


def init_variables(model, key, sample_rate: int = 48000, batch_size: int = 1, num_samples=None):
    """All variable collections of `model` ('params', and 'constants' for FlowSE), jitted init.

    BSRNN and FlowSE create every band's parameters at any rate, so their trees do not depend on it.
    """
    args, kwargs = example_inputs(model, sample_rate, batch_size, num_samples)
    return jax.jit(lambda k: model.init(k, *args, **kwargs))(key)
