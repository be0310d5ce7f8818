"""Convert official PyTorch checkpoints into urgent_jax variables.

    python -m urgent_jax.models.convert --from espnet_bsrnn CKPT --out DIR [--model bsrnn] \
        [--key=value ...]
    python -m urgent_jax.models.convert --from flowse CKPT --out DIR [--model flowse] [--no_ema]

Inputs: a PyTorch Lightning `.ckpt` of the official Track 1 baseline (state dict under "state_dict";
BSRNN keys `se_model.bsrnn.bsrnn.*` from `SEModel`, FlowSE keys `dnn.*` from `FlowSEModel` with the
torch-ema state under "ema") or a plain state dict (ESPnet `separator.bsrnn.*`, `bsrnn.*`, or bare
BSRNN keys). The key prefix is found from the model's own top-level names. For FlowSE the EMA
weights (`ema.shadow_params`, in parameter order) replace the raw weights when present, since the
reference evaluates with them.

The conversion is strict: every reference tensor is consumed exactly once, every parameter of ours
is filled, and shapes are checked; otherwise a ValueError lists the offending keys. Model sizes
(channels, layers, causality, decoder channels) are read from the tensors and can be overridden.

Output (one format): DIR/variables.msgpack, `flax.serialization.msgpack_serialize` of the plain
(unboxed) variables {'params': ..., 'constants': ...} as numpy float32, and DIR/model.json
{"model": name, "overrides": {...}}. `load_converted(DIR)` returns (model, variables).
PyTorch is imported only here, lazily.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pickle
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import flax
import flax.linen as nn
import jax
import numpy as np

from urgent_jax import models
from urgent_jax.models import layers

BSRNN_TOP = (
    "band_split",
    "norm_time",
    "rnn_time",
    "fc_time",
    "norm_freq",
    "rnn_freq",
    "fc_freq",
    "mask_decoder",
)
FLOWSE_TOP = (
    "band_split_x",
    "band_split_y",
    "condition_fc",
    "t_cond",
    "norm_time",
    "rnn_time",
    "fc_time",
    "norm_freq",
    "rnn_freq",
    "fc_freq",
    "grad_decoder",
)
FORMATS = {"espnet_bsrnn": ("bsrnn", BSRNN_TOP), "flowse": ("flowse", FLOWSE_TOP)}

# A rule: (collection, path in our tree, reference keys, combine(list of arrays) -> array)
Rule = tuple[str, tuple[str, ...], list[str], Callable[[list[np.ndarray]], np.ndarray]]


# --- reading checkpoints ---------------------------------------------------------------------


class _Placeholder:
    """Stands in for a pickled class that cannot be imported (e.g. the baseline's Config)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Placeholder,), {"__module__": module})


_lenient_pickle = types.SimpleNamespace(
    __name__="lenient_pickle",
    Unpickler=_LenientUnpickler,
    load=lambda f, **kw: _LenientUnpickler(f, **kw).load(),
)


def load_torch_checkpoint(path) -> tuple[dict[str, np.ndarray], list[np.ndarray] | None]:
    """(ordered state dict as float32 numpy, EMA shadow parameters or None) of a .ckpt/.pt file."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - Lightning pickles hyper-parameter objects; retry leniently
        ckpt = torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle
        )
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        state, ema = ckpt["state_dict"], ckpt.get("ema")
    else:
        state, ema = ckpt, None

    def to_np(tensor):
        return tensor.detach().cpu().float().numpy()

    state = {k: to_np(v) for k, v in state.items() if hasattr(v, "detach")}
    shadow = None
    if isinstance(ema, dict) and ema.get("shadow_params") is not None:
        shadow = [to_np(t) for t in ema["shadow_params"]]
    return state, shadow


def apply_ema(state: dict[str, np.ndarray], shadow: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Replace parameters by torch-ema shadow parameters (listed in `parameters()` order).

    torch-ema 0.3 keeps every parameter (fixed ones included); older versions only trainable ones,
    which here means all but the FlowSE Fourier weights `t_cond.*.W`.
    """
    keys = list(state)
    if len(shadow) != len(keys):
        keys = [k for k in keys if not (".t_cond." in f".{k}" and k.endswith(".W"))]
    if len(shadow) != len(keys):
        raise ValueError(f"EMA holds {len(shadow)} tensors; the state dict {len(state)} parameters")
    out = dict(state)
    for key, value in zip(keys, shadow):
        if value.shape != state[key].shape:
            raise ValueError(
                f"EMA tensor for {key} has shape {value.shape}, expected {state[key].shape}"
            )
        out[key] = value
    return out


def strip_prefix(state: dict[str, np.ndarray], top_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Drop the wrapper prefix (e.g. 'se_model.bsrnn.bsrnn.'): all before a model top-level name."""
    prefixes, unknown = set(), []
    for key in state:
        parts = key.split(".")
        hit = next((i for i, p in enumerate(parts) if p in top_names), None)
        if hit is None:
            unknown.append(key)
        else:
            prefixes.add(".".join(parts[:hit]))
    if unknown:
        raise ValueError(f"keys outside the model ({len(unknown)}): {sorted(unknown)[:20]}")
    if len(prefixes) != 1:
        raise ValueError(f"several key prefixes: {sorted(prefixes)}")
    prefix = prefixes.pop()
    cut = len(prefix) + 1 if prefix else 0
    return {k[cut:]: v for k, v in state.items()}


# --- configuration from tensor shapes --------------------------------------------------------


def _norm_names(state, key_prefix: str) -> tuple[str, str]:
    """('weight', 'bias') for GroupNorm, ('gamma', 'beta') for cLN/cfLN."""
    return ("weight", "bias") if f"{key_prefix}.weight" in state else ("gamma", "beta")


def infer_overrides(fmt: str, state: dict[str, np.ndarray]) -> dict:
    """Model sizes read from the tensors: channels, layers, causality, norm, decoder channels."""
    split = "band_split" if fmt == "espnet_bsrnn" else "band_split_x"
    num_layers = len({k.split(".")[1] for k in state if k.startswith("rnn_time.")})
    overrides = {
        "num_channels": int(state[f"{split}.fc.0.weight"].shape[0]),
        "num_layers": num_layers,
        "is_causal": "rnn_time.0.weight_ih_l0_reverse" not in state,
        # cLN and cfLN have the same parameters; cLN is assumed (override with --norm_type=cfLN)
        "norm_type": "GN" if "norm_time.0.weight" in state else "cLN",
    }
    if fmt == "flowse":
        overrides["sub_channels"] = int(state["grad_decoder.conv_after_mask.0.weight"].shape[1])
    return overrides


# --- rules ---------------------------------------------------------------------------------


def _stack(fn):
    return lambda arrays: np.stack([fn(a) for a in arrays])


def _one(fn):
    return lambda arrays: fn(arrays[0])


_flat = _stack(lambda a: a.reshape(-1))  # norm weights ([C] or cLN's [1, C, 1(, 1)]), stacked
_conv1x1 = _stack(lambda a: a[:, :, 0].T)  # Conv1d [out, in, 1] -> [in, out], stacked
_transposed = _stack(lambda a: a.T)  # LSTM [4H, in] -> [in, 4H], stacked over directions
_stacked = _stack(lambda a: a)
_flat_one = _one(lambda a: a.reshape(-1))
_linear = _one(lambda a: a.T)  # Linear [out, in] -> [in, out]
_same = _one(lambda a: a)


def _grouped(path, name, key_format, groups, combine) -> list[Rule]:
    """One rule per band group: path/<name>_<first>_<last> <- key_format.format(k) of its bands."""
    return [
        (
            "params",
            (*path, layers.group_name(name, first, count)),
            [key_format.format(k) for k in range(first, first + count)],
            combine,
        )
        for first, count in groups
    ]


def _band_split_rules(state, prefix: str, path, widths) -> list[Rule]:
    """Band split: norm1d + 1x1 conv per band, stacked per group of equal widths."""
    w, b = _norm_names(state, f"{prefix}.norm.0")
    groups = layers.band_groups(widths)
    return (
        _grouped((*path, "norm"), "scale", f"{prefix}.norm.{{}}.{w}", groups, _flat)
        + _grouped((*path, "norm"), "bias", f"{prefix}.norm.{{}}.{b}", groups, _flat)
        + _grouped((*path, "fc"), "kernel", f"{prefix}.fc.{{}}.weight", groups, _conv1x1)
        + _grouped((*path, "fc"), "bias", f"{prefix}.fc.{{}}.bias", groups, _stacked)
    )


def _dual_path_rules(state, num_layers: int, is_causal: bool) -> list[Rule]:
    """Per layer: (time|band)_norm, _rnn, _fc <- norm_/rnn_/fc_(time|freq).<layer>."""
    rules = []
    for layer in range(num_layers):
        for ours, theirs, bidirectional in (
            ("time", "time", not is_causal),
            ("band", "freq", True),
        ):
            block, norm, rnn = f"layers_{layer}", f"norm_{theirs}.{layer}", f"rnn_{theirs}.{layer}"
            w, b = _norm_names(state, norm)
            dirs = ["", "_reverse"] if bidirectional else [""]
            rules += [
                ("params", (block, f"{ours}_norm", "scale"), [f"{norm}.{w}"], _flat_one),
                ("params", (block, f"{ours}_norm", "bias"), [f"{norm}.{b}"], _flat_one),
                *[
                    (
                        "params",
                        (block, f"{ours}_rnn", ours_name),
                        [f"{rnn}.{name}{d}" for d in dirs],
                        _transposed if ours_name.startswith("kernel") else _stacked,
                    )
                    for ours_name, name in (
                        ("kernel_ih", "weight_ih_l0"),
                        ("kernel_hh", "weight_hh_l0"),
                        ("bias_ih", "bias_ih_l0"),
                        ("bias_hh", "bias_hh_l0"),
                    )
                ],
                (
                    "params",
                    (block, f"{ours}_fc", "kernel"),
                    [f"fc_{theirs}.{layer}.weight"],
                    _linear,
                ),
                ("params", (block, f"{ours}_fc", "bias"), [f"fc_{theirs}.{layer}.bias"], _same),
            ]
    return rules


def _head_norm_rules(state, head: str, path, num_bands: int) -> list[Rule]:
    """A decoder head's per-band norm (module 0 of each band's Sequential), one group."""
    w, b = _norm_names(state, f"{head}.0.0")
    everything = [(0, num_bands)]
    return _grouped((*path, "norm"), "scale", f"{head}.{{}}.0.{w}", everything, _flat) + _grouped(
        (*path, "norm"), "bias", f"{head}.{{}}.0.{b}", everything, _flat
    )


def bsrnn_rules(model, state) -> list[Rule]:
    """Reference key -> our path for ESPnet's BSRNN (band_split, dual-path layers, mask_decoder)."""
    widths = model.band_widths
    groups, everything = layers.band_groups(widths), [(0, len(widths))]
    rules = _band_split_rules(state, "band_split", ("band_split",), widths)
    rules += _dual_path_rules(state, model.num_layers, model.is_causal)
    for ours, theirs in (("mask", "mlp_mask"), ("residual", "mlp_residual")):
        head, path = f"mask_decoder.{theirs}", ("mask_decoder", ours)
        rules += _head_norm_rules(state, head, path, len(widths))
        # Sequential(norm, Conv1d N->4N, Tanh, Conv1d 4N->4w, GLU): modules 1 and 3
        rules += _grouped((*path, "fc1"), "kernel", f"{head}.{{}}.1.weight", everything, _conv1x1)
        rules += _grouped((*path, "fc1"), "bias", f"{head}.{{}}.1.bias", everything, _stacked)
        rules += _grouped((*path, "fc2"), "kernel", f"{head}.{{}}.3.weight", groups, _conv1x1)
        rules += _grouped((*path, "fc2"), "bias", f"{head}.{{}}.3.bias", groups, _stacked)
    return rules


def flowse_rules(model, state) -> list[Rule]:
    """Reference key -> our path for the official bsrnn_flowse.BSRNN (FlowSE vector field)."""
    widths = model.band_widths
    groups = layers.band_groups(widths)
    rules = _band_split_rules(state, "band_split_x", ("band_split_x",), widths)
    rules += _band_split_rules(state, "band_split_y", ("band_split_y",), widths)
    rules += [
        ("params", ("condition_fc", "kernel"), ["condition_fc.weight"], _linear),
        ("params", ("condition_fc", "bias"), ["condition_fc.bias"], _same),
    ]
    rules += [
        ("constants", (f"time_embeddings_{layer}", "W"), [f"t_cond.{layer}.W"], _same)
        for layer in range(model.num_layers)
    ]
    rules += _dual_path_rules(state, model.num_layers, model.is_causal)
    for head_name in ("mask", "residual"):
        head, path = f"grad_decoder.mlp_{head_name}", ("grad_decoder", head_name)
        rules += _head_norm_rules(state, head, path, len(widths))
        # Sequential(norm, Conv1d N->16w, Tanh): module 1
        rules += _grouped((*path, "fc"), "kernel", f"{head}.{{}}.1.weight", groups, _conv1x1)
        rules += _grouped((*path, "fc"), "bias", f"{head}.{{}}.1.bias", groups, _stacked)
        conv = f"grad_decoder.conv_after_{head_name}.0"
        rules += [  # Conv2d [out, in, freq, time] -> [time, freq, in, out]
            (
                "params",
                (*path, "kernel"),
                [f"{conv}.weight"],
                _one(lambda a: a.transpose(3, 2, 1, 0)),
            ),
            ("params", (*path, "bias"), [f"{conv}.bias"], _same),
        ]
    return rules


# --- conversion ------------------------------------------------------------------------------


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def convert_state(fmt: str, state: dict[str, np.ndarray], model) -> dict:
    """Strictly map a prefix-free reference state dict onto model's variables (numpy float32)."""
    args, kwargs = models.example_inputs(model)
    expected = nn.unbox(jax.eval_shape(lambda k: model.init(k, *args, **kwargs), jax.random.key(0)))
    rules = (bsrnn_rules if fmt == "espnet_bsrnn" else flowse_rules)(model, state)
    seen: set[str] = set()
    out: dict = {}
    missing, bad_shapes = [], []
    for collection, path, keys, combine in rules:
        dup = seen.intersection(keys)
        if dup:
            raise AssertionError(f"reference keys used twice: {sorted(dup)}")
        seen.update(keys)
        absent = [k for k in keys if k not in state]
        if absent:
            missing += absent
            continue
        value = np.asarray(combine([state[k] for k in keys]), np.float32)
        target = expected[collection]
        for key in path:
            target = target.get(key) if isinstance(target, dict) else None
        if target is None:
            raise AssertionError(f"rule targets {collection}/{'/'.join(path)}, absent in the model")
        if value.shape != tuple(target.shape):
            bad_shapes.append(
                f"{keys[0]}{'…' if len(keys) > 1 else ''} -> {'/'.join(path)}: "
                f"{value.shape} vs {tuple(target.shape)}"
            )
            continue
        _set(out.setdefault(collection, {}), path, value)
    unused = sorted(set(state) - seen)
    filled = {
        (c, jax.tree_util.keystr(p))
        for c in out
        for p, _ in jax.tree_util.tree_flatten_with_path(out[c])[0]
    }
    unfilled = sorted(
        f"{c}{jax.tree_util.keystr(p)}"
        for c in expected
        for p, _ in jax.tree_util.tree_flatten_with_path(expected[c])[0]
        if (c, jax.tree_util.keystr(p)) not in filled
    )
    problems = []
    if missing:
        problems.append(f"missing reference keys ({len(missing)}): {missing[:20]}")
    if unused:
        problems.append(f"unmatched reference keys ({len(unused)}): {unused[:20]}")
    if bad_shapes:
        problems.append(f"shape mismatches ({len(bad_shapes)}): {bad_shapes[:20]}")
    if unfilled and not problems:
        problems.append(f"parameters without a reference tensor ({len(unfilled)}): {unfilled[:20]}")
    if problems:
        raise ValueError("checkpoint does not match the model:\n  " + "\n  ".join(problems))
    return out


def convert_checkpoint(
    fmt: str, path, model_name: str | None = None, use_ema: bool = True, **overrides
):
    """Read a reference checkpoint -> (model, variables, (model name, overrides used))."""
    if fmt not in FORMATS:
        raise ValueError(f"--from must be one of {sorted(FORMATS)}, got {fmt!r}")
    default_name, top_names = FORMATS[fmt]
    model_name = model_name or default_name
    state, shadow = load_torch_checkpoint(path)
    if shadow is not None and use_ema:
        state = apply_ema(state, shadow)
    elif fmt == "flowse" and use_ema:
        warnings.warn("no EMA weights in the checkpoint; converting the raw weights", stacklevel=2)
    state = strip_prefix(state, top_names)
    overrides = {**infer_overrides(fmt, state), **overrides}
    model = models.build(model_name, **overrides)
    return model, convert_state(fmt, state, model), (model_name, overrides)


def save_converted(out_dir, variables, model_name: str, overrides: dict) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blob = flax.serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, variables))
    (out_dir / "variables.msgpack").write_bytes(blob)
    jsonable = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    (out_dir / "model.json").write_text(
        json.dumps({"model": model_name, "overrides": jsonable}, indent=1)
    )
    return out_dir


def load_converted(out_dir):
    """(model, variables) from a directory written by this command."""
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / "model.json").read_text())
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["overrides"].items()}
    model = models.build(meta["model"], **overrides)
    variables = flax.serialization.msgpack_restore((out_dir / "variables.msgpack").read_bytes())
    return model, variables


def _parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        if not item.startswith("--") or "=" not in item:
            raise SystemExit(f"unexpected argument {item!r}; overrides look like --key=value")
        key, value = item[2:].split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="fmt", required=True, choices=sorted(FORMATS))
    parser.add_argument("checkpoint", help="Lightning .ckpt or a torch state dict")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--model", default=None, help="registry name (default: bsrnn / flowse)")
    parser.add_argument("--no_ema", action="store_true", help="FlowSE: ignore the EMA weights")
    args, rest = parser.parse_known_args(argv)
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"error: {args.checkpoint}: checkpoint file not found")
    _, variables, (name, overrides) = convert_checkpoint(
        args.fmt, args.checkpoint, args.model, not args.no_ema, **_parse_overrides(rest)
    )
    out = save_converted(args.out, variables, name, overrides)
    total = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(variables))
    print(f"{name} {overrides} -> {out} ({total} values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
