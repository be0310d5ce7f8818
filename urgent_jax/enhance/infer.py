"""Enhance a list of recordings: `python -m urgent_jax.enhance.infer --workdir W --input_scp wav.scp
--output_dir OUT`, writing `OUT/wav/<uid>.wav` and `OUT/inf.scp` (the official layout, REFERENCE.md §1.4).

    python -m urgent_jax.enhance.infer --workdir exp/bsrnn --input_scp data/validation/wav.scp \
        --output_dir exp/bsrnn/enhanced [--step N] [--batch_size 8] [--chunk_s 30] [--num_steps 15]
    python -m urgent_jax.enhance.infer --params converted_dir --input_scp ... --output_dir ...

The model comes from <workdir>/config.json and its newest (or --step) checkpoint (EMA weights when the
run kept them), or from a converted checkpoint (`--params`, see urgent_jax.models.convert). Utterances
are batched by sampling rate and padded length bucket (bounded compiles); recordings longer than
--chunk_s are split into overlapping chunks enhanced in the same batches and joined by cross-fading
overlap-add. Outputs are rescaled to peak 0.9 like the baselines' (--peak 0 keeps the model's
scale). A file that cannot be read or enhanced is reported in OUT/errors.tsv and skipped.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from tqdm import tqdm

from urgent_jax import models, prepare_runtime
from urgent_jax.audio.io import AudioFileError, read_audio, write_audio
from urgent_jax.data.manifest import read_kv, write_kv
from urgent_jax.models import flowse
from urgent_jax.train.checkpoint import restore_on_host

log = logging.getLogger(__name__)


def load_model_and_variables(workdir: str | None = None, params_path: str | None = None,
                             step: int | None = None):
    """(model, variables) from a training workdir (config.json + checkpoint) or a directory written by
    `python -m urgent_jax.models.convert` (variables.msgpack + model.json)."""
    if params_path and (workdir or step is not None):
        raise ValueError("--params (a converted checkpoint) replaces --workdir and --step: give "
                         "either --workdir [--step N] or --params")
    if params_path:
        from urgent_jax.models.convert import load_converted

        if not os.path.exists(os.path.join(params_path, "model.json")):
            raise FileNotFoundError(f"{params_path}: not a converted checkpoint (no model.json); "
                                    "write one with python -m urgent_jax.models.convert")
        return load_converted(params_path)
    if not workdir:
        raise ValueError("give --workdir (a training run) or --params")
    if not os.path.exists(os.path.join(workdir, "config.json")):
        raise FileNotFoundError(f"{workdir}: not a training run (no config.json); --workdir must "
                                "be an urgent_jax.enhance.train workdir")
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    model = models.build(config.model.name, **config.model.kwargs.to_dict())
    state, chosen = restore_on_host(os.path.join(workdir, "checkpoints"), step)
    params = state["ema_params"] if state.get("ema_params") is not None else state["params"]
    variables = {"params": params, **(state.get("constants") or {})}
    log.info("loaded %s step %d from %s", config.model.name, chosen, workdir)
    return model, variables


def _bucket(n: int) -> int:
    step = 1 << max(0, (max(n, 1) - 1).bit_length() - 2)  # 4 lengths per octave
    return max(4096, -(-n // step) * step)


def chunk_bounds(num_samples: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of overlapping chunks covering [0, num_samples)."""
    if not 0 <= overlap < chunk:
        raise ValueError(f"chunk overlap must be in [0, chunk): got overlap {overlap}, "
                         f"chunk {chunk} samples")
    if num_samples <= chunk:
        return [(0, num_samples)]
    hop = chunk - overlap
    starts = list(range(0, num_samples - overlap, hop))
    return [(s, min(s + chunk, num_samples)) for s in starts]


def overlap_add(pieces: list[np.ndarray], bounds: list[tuple[int, int]], num_samples: int,
                overlap: int) -> np.ndarray:
    """Join chunks with linear cross-fades over the overlaps (weights sum to one)."""
    out = np.zeros(num_samples, np.float64)
    weight = np.zeros(num_samples, np.float64)
    for piece, (s, e) in zip(pieces, bounds):
        w = np.ones(e - s)
        ramp = min(overlap, e - s)  # 0: chunks only touch (w[-0:] would be the whole chunk)
        if s > 0 and ramp > 0:
            w[:ramp] = np.linspace(0.0, 1.0, ramp + 2)[1:-1]
        if e < num_samples and ramp > 0:
            w[-ramp:] = np.minimum(w[-ramp:], np.linspace(1.0, 0.0, ramp + 2)[1:-1])
        out[s:e] += piece[: e - s] * w
        weight[s:e] += w
    return (out / np.maximum(weight, 1e-8)).astype(np.float32)


def enhance_scp(
    model,
    variables,
    input_scp: str,
    output_dir: str,
    *,
    batch_size: int = 8,
    chunk_s: float = 30.0,
    overlap_s: float = 1.0,
    num_steps: int = 15,
    peak: float = 0.9,
    seed: int = 0,
    use_progress_bar: bool = True,
) -> dict:
    """Enhance every recording of `input_scp` (uid path); returns a summary."""
    if not 0 <= overlap_s < chunk_s:
        raise ValueError(f"need 0 <= overlap_s < chunk_s, got overlap_s={overlap_s}, "
                         f"chunk_s={chunk_s}")
    entries = read_kv(input_scp)
    is_flow = isinstance(model, flowse.FlowSE)
    if is_flow:
        fn = jax.jit(lambda v, x, n, key, sample_rate: flowse.enhance(model, v, x, n, sample_rate, key, num_steps),
                     static_argnames="sample_rate")
    else:
        fn = jax.jit(lambda v, x, n, key, sample_rate: model.apply(v, x, n, sample_rate=sample_rate),
                     static_argnames="sample_rate")
    wav_dir = os.path.join(output_dir, "wav")
    os.makedirs(wav_dir, exist_ok=True)
    errors: list[tuple[str, str]] = []
    audio: dict[str, tuple[np.ndarray, int]] = {}

    def load(item):
        uid, path = item
        try:
            x, sr = read_audio(path, first_channel=True)
            x = x[0]
            if not np.all(np.isfinite(x)):
                raise AudioFileError(f"{path}: NaN or inf samples")
            if x.size == 0:
                raise AudioFileError(f"{path}: empty audio")
            return uid, x, sr, None
        except AudioFileError as e:
            return uid, None, None, str(e)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for uid, x, sr, err in pool.map(load, entries.items()):
            if err:
                errors.append((uid, err))
            else:
                audio[uid] = (x, sr)

    # Work items: (uid, chunk index, samples); long files become overlapping chunks.
    items, plans = [], {}
    for uid, (x, sr) in audio.items():
        chunk, overlap = int(chunk_s * sr), int(overlap_s * sr)
        bounds = chunk_bounds(len(x), chunk, overlap)
        plans[uid] = (bounds, overlap)
        items += [(uid, i, x[s:e], sr) for i, (s, e) in enumerate(bounds)]
    by_rate: dict[int, list] = {}
    for it in items:
        by_rate.setdefault(it[3], []).append(it)
    results: dict[tuple[str, int], np.ndarray] = {}
    shapes = set()
    bar = tqdm(total=len(items), desc="enhance", unit="chunk", disable=not use_progress_bar)
    key = jax.random.PRNGKey(seed)
    for sr, group in sorted(by_rate.items()):
        group.sort(key=lambda it: len(it[2]))
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            width = _bucket(max(len(it[2]) for it in batch))
            x = np.zeros((batch_size, width), np.float32)
            lengths = np.full(batch_size, 1, np.int32)
            for i, it in enumerate(batch):
                x[i, : len(it[2])] = it[2]
                lengths[i] = len(it[2])
            shapes.add((sr, width))
            try:
                y = np.asarray(fn(variables, jnp.asarray(x), jnp.asarray(lengths),
                                  jax.random.fold_in(key, start), sample_rate=sr))
            except Exception as e:  # report and go on with the next batch
                for it in batch:
                    errors.append((it[0], f"enhancement failed: {e}"))
                bar.update(len(batch))
                continue
            for i, it in enumerate(batch):
                results[(it[0], it[1])] = y[i, : len(it[2])]
            bar.update(len(batch))
    bar.close()

    written = {}
    failed = {u for u, _ in errors}
    for uid in entries:
        if uid not in audio or uid in failed:
            continue
        x, sr = audio[uid]
        bounds, overlap = plans[uid]
        pieces = [results[(uid, i)] for i in range(len(bounds))]
        y = pieces[0] if len(pieces) == 1 else overlap_add(pieces, bounds, len(x), overlap)
        if peak > 0:
            y = y * (peak / max(float(np.max(np.abs(y))), 1e-6))
        path = os.path.abspath(os.path.join(wav_dir, f"{uid}.wav"))
        try:
            write_audio(path, y, sr)
        except AudioFileError as e:  # per file, like read errors: the rest is still listed
            errors.append((uid, str(e)))
            continue
        written[uid] = path
    write_kv(os.path.join(output_dir, "inf.scp"), written)
    with open(os.path.join(output_dir, "errors.tsv"), "w") as f:
        f.write("uid\treason\n")
        for uid, reason in errors:
            f.write(f"{uid}\t{reason}\n")
    return {"num_inputs": len(entries), "num_written": len(written), "num_errors": len(errors),
            "batch_shapes": len(shapes)}


def _define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Training run directory (config.json + checkpoints).")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
    flags.DEFINE_string("params", None, "A converted checkpoint directory (instead of --workdir).")
    flags.DEFINE_string("input_scp", None, "uid path list of recordings to enhance.")
    flags.DEFINE_string("output_dir", None, "Where wav/ and inf.scp go.")
    flags.DEFINE_integer("batch_size", 8, "Utterances (chunks) per call.")
    flags.DEFINE_float("chunk_s", 30.0, "Longer recordings are enhanced in chunks of this length.")
    flags.DEFINE_float("overlap_s", 1.0, "Cross-fade between chunks, seconds.")
    flags.DEFINE_integer("num_steps", 15, "FlowSE sampler steps.")
    flags.DEFINE_float("peak", 0.9, "Output peak (0: keep the model's scale).")
    flags.mark_flags_as_required(["input_scp", "output_dir"])


def main(argv) -> None:
    del argv
    prepare_runtime()
    f = flags.FLAGS
    model, variables = load_model_and_variables(f.workdir, f.params, f.step)
    summary = enhance_scp(model, variables, f.input_scp, f.output_dir, batch_size=f.batch_size,
                          chunk_s=f.chunk_s, overlap_s=f.overlap_s, num_steps=f.num_steps, peak=f.peak)
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
