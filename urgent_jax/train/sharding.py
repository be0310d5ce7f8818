"""Device mesh and the one logical-axis rules table (the only place logical axes meet mesh axes).

Mesh axes: `data` (pure data parallelism) and `fsdp` (data parallelism whose parameters and optimiser
state are also sharded). Models annotate large kernels with logical names (STYLE.md vocabulary:
batch, time, freq, band, channel, embed, heads, mlp); `LOGICAL_AXIS_RULES` maps them to mesh axes.
Batches are split over both axes. A parameter dimension that does not divide by its mesh axis size is
replicated instead (small models on many devices keep working).
"""

from __future__ import annotations

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXES = ("data", "fsdp")

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", DATA_AXES),
    ("embed", "fsdp"),
    ("mlp", "fsdp"),
    ("channel", "fsdp"),
    ("heads", None),
    ("band", None),
    ("freq", None),
    ("time", None),
)


def make_mesh(num_fsdp: int = 1, devices=None) -> Mesh:
    """A (data, fsdp) mesh over all (global) devices; num_fsdp devices per FSDP group.

    Axes are Auto (annotate inputs/outputs, let XLA propagate): jax.make_mesh would default to
    Explicit axes, which this code does not use.
    """
    devices = np.asarray(jax.devices() if devices is None else devices)
    if devices.size % num_fsdp:
        raise ValueError(f"{devices.size} devices do not split into fsdp groups of {num_fsdp}")
    grid = devices.reshape(devices.size // num_fsdp, num_fsdp)
    return Mesh(grid, ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drop mesh axes from dimensions they do not divide (those dimensions are replicated)."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        out.append(axes if names and dim % size == 0 else None)
    return P(*out)


def variable_shardings(abstract_variables, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """NamedShardings for a (boxed, from eval_shape of init) variable tree; unannotated = replicated."""
    logical = nn.get_partition_spec(abstract_variables)
    mesh_specs = nn.logical_to_mesh(logical, rules)
    unboxed = nn.meta.unbox(abstract_variables)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(mesh, _fit(spec if spec is not None else P(), leaf.shape, mesh)),
        mesh_specs,
        unboxed,
        is_leaf=lambda x: isinstance(x, P) or x is None,
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device."""
    return NamedSharding(mesh, P(DATA_AXES))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Process-local numpy batch -> global jax arrays sharded over the batch axis.

    Arrays with a leading batch axis are assembled across processes
    (jax.make_array_from_process_local_data); scalars (e.g. the batch's sampling rate) are replicated.
    """
    shard = batch_sharding(mesh)
    rep = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        if x.ndim == 0:
            return jax.device_put(x, rep) if jax.process_count() == 1 else x
        return jax.make_array_from_process_local_data(shard, x)

    return {k: put(v) for k, v in local_batch.items()}
