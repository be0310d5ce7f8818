"""urgent_jax.configure_cpu_kernels: when it sets XLA_FLAGS, when it leaves them alone, and that
computations under the kernels it picks match numpy. Each case runs in a fresh interpreter, since
XLA reads its flags once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from urgent_jax import CPU_KERNEL_FLAG

_PROBE = r"""
import json, os, sys
import numpy as np
import urgent_jax
if sys.argv[1] == "after_init":
    import jax.numpy as jnp
    jnp.zeros(1).block_until_ready()
applied = urgent_jax.configure_cpu_kernels()
import jax, jax.numpy as jnp
from jax import lax
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 20, 17, 8)).astype(np.float32)
w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
a = rng.standard_normal((64, 96)).astype(np.float32)
b = rng.standard_normal((96, 48)).astype(np.float32)
conv = jax.jit(lambda x, w: lax.conv_general_dilated(
    x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))(x, w)
dot = jax.jit(jnp.dot)(a, b)
def chain(x, w1, w2, d):  # conv / relu / pool / conv / relu / global max / dense, as in DNSMOS
    def conv(y, w):
        return lax.conv_general_dilated(
            y, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = jnp.maximum(conv(x, w1), 0)
    y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    y = jnp.maximum(conv(y, w2), 0)
    return jnp.max(y, axis=(1, 2)) @ d
shapes = [jnp.ones(s) for s in ((2, 40, 34, 1), (3, 3, 1, 16), (3, 3, 16, 16), (16, 4))]
ynn = jax.jit(chain).lower(*shapes).compile().as_text().count("__ynn_fusion")
# numpy reference: the same 3x3 zero-padded correlation and product in float64
xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
ref = sum(np.einsum("nhwi,io->nhwo", xp[:, i:i + 20, j:j + 17], w[i, j]) for i in range(3)
          for j in range(3))
print(json.dumps({
    "applied": applied,
    "ynn": ynn,
    "flags": os.environ.get("XLA_FLAGS", ""),
    "conv_err": float(np.max(np.abs(np.asarray(conv) - ref)) / np.max(np.abs(ref))),
    "dot_err": float(np.max(np.abs(np.asarray(dot) - a.astype(np.float64) @ b))
                     / np.max(np.abs(a.astype(np.float64) @ b))),
}))
"""


def _probe(mode: str = "", **env) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "URGENT_JAX_CPU_KERNELS")}
    base.update(JAX_PLATFORMS="cpu", **env)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode or "fresh"],
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "mode, env, applied, flags",
    [
        ("fresh", {}, True, CPU_KERNEL_FLAG),
        (
            "fresh",
            {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"},
            True,
            "--xla_cpu_enable_fast_math=false " + CPU_KERNEL_FLAG,
        ),
        ("fresh", {"URGENT_JAX_CPU_KERNELS": "default"}, False, ""),
        (
            "fresh",
            {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=eltwise"},
            False,
            "--xla_cpu_experimental_ynn_fusion_type=eltwise",
        ),
        ("after_init", {}, False, ""),
    ],
)
def test_configure_cpu_kernels(mode, env, applied, flags):
    result = _probe(mode, **env)
    assert result["applied"] is applied
    assert result["flags"] == flags
    if CPU_KERNEL_FLAG in flags:  # YNNPACK runs the dense layer only
        assert result["ynn"] == 1
    elif "ynn_fusion_type" not in flags:  # by default it also takes ops around the convolutions
        assert result["ynn"] > 1
    # Whatever kernels run, they compute the same convolution and product as numpy.
    assert result["conv_err"] < 1e-5
    assert result["dot_err"] < 1e-5
