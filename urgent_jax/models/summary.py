"""Per-module parameter table of a registered model, from shapes only (jax.eval_shape, no compute).

    python -m urgent_jax.models.summary bsrnn
    python -m urgent_jax.models.summary flowse --num_channels=16 --num_layers=2 --sample_rate=16000

Prints one row per module that owns variables (path, collection, count, shapes) and ends with
`total_params: <N>`, N counting every collection (FlowSE's fixed Fourier weights included, as
PyTorch counts them).
"""

from __future__ import annotations

import argparse
import ast
import sys

import flax.linen as nn
import jax
import numpy as np

from urgent_jax import models


def variable_shapes(model, sample_rate: int = 48000) -> dict:
    """{collection: pytree of ShapeDtypeStruct} of model's variables, without allocating them."""
    args, kwargs = models.example_inputs(model, sample_rate)
    shapes = jax.eval_shape(lambda k: model.init(k, *args, **kwargs), jax.random.key(0))
    return nn.unbox(shapes)


def count(tree) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree_util.tree_leaves(tree)))


def module_rows(variables) -> list[tuple[str, str, int, str]]:
    """(module path, collection, count, 'name shape, ...') per module owning variables."""
    rows = []
    for collection, tree in variables.items():
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        grouped: dict[str, list] = {}
        for path, leaf in leaves:
            keys = [str(getattr(p, "key", p)) for p in path]
            grouped.setdefault("/".join(keys[:-1]) or ".", []).append((keys[-1], leaf.shape))
        for module, items in grouped.items():
            n = sum(int(np.prod(shape, dtype=np.int64)) for _, shape in items)
            desc = ", ".join(f"{name} {tuple(shape)}" for name, shape in items)
            rows.append((module, collection, n, desc))
    return rows


def format_table(variables, max_desc: int = 80) -> str:
    rows = module_rows(variables)
    width = max([len(r[0]) for r in rows] + [6])
    lines = [f"{'module':<{width}}  {'collection':<10}  {'count':>12}  shapes"]
    for module, collection, n, desc in rows:
        desc = desc if len(desc) <= max_desc else desc[: max_desc - 3] + "..."
        lines.append(f"{module:<{width}}  {collection:<10}  {n:>12,}  {desc}")
    for collection, tree in variables.items():
        lines.append(f"{collection}: {count(tree)}")
    lines.append(f"total_params: {count(variables)}")
    return "\n".join(lines)


def _parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        if not item.startswith("--") or "=" not in item:
            raise SystemExit(f"override {item!r} must look like --key=value")
        key, value = item[2:].split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value  # a plain string, e.g. --dtype=bfloat16
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=models.names())
    parser.add_argument("--sample_rate", type=int, default=48000)
    args, rest = parser.parse_known_args(argv)
    overrides = _parse_overrides(rest)
    try:
        defaults = models.build(args.name)
        model = models.build(args.name, **overrides)
    except (TypeError, ValueError) as e:  # unknown field, bad dtype name
        raise SystemExit(f"error: {e}") from None
    for key, value in overrides.items():  # a value that is not a literal stays a string
        default = getattr(defaults, key, None)
        if isinstance(value, str) and isinstance(default, bool | int | float | tuple | list):
            raise SystemExit(f"error: --{key}={value}: expected {type(default).__name__} "
                             f"(default {default!r})")
    print(format_table(variable_shapes(model, args.sample_rate)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
