"""Metric writers of the train loop: JSON lines, TensorBoard event files (tensorboardX), console bar."""

from __future__ import annotations

import json
import math
import os
import time

import jax
from tqdm import tqdm


def _scalar(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class MetricWriter:
    """Writes scalars to `<workdir>/metrics.jsonl` and TensorBoard; only process 0 writes."""

    def __init__(self, workdir: str, use_tensorboard: bool = True):
        self.is_writer = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if not self.is_writer:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        if use_tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict, prefix: str = "") -> None:
        if not self.is_writer:
            return
        clean = {f"{prefix}{k}": _scalar(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": round(time.time(), 3), **clean}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if v is not None:
                    self._tb.add_scalar(k, v, int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class ProgressBar:
    """tqdm over steps with the latest loss, SI-SNR, grad norm, skipped steps, audio-s/s, compiles."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                        disable=not enabled or jax.process_index() != 0)

    def update(self, n: int, **postfix) -> None:
        shown = {}
        for k, v in postfix.items():
            if v is None:  # a metric the task does not log (FlowSE has no training SI-SNR)
                continue
            f = _scalar(v)
            shown[k] = v if f is None else (f"{f:.3g}" if abs(f) < 1e4 else f"{f:.0f}")
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
