"""The main job, run by `make quickstart`: everything offline on the embedded demo corpus.

    python experiments/quickstart.py --out runs/quickstart [--size small] [--seed 0]

Stages (each resumes from what already exists):
  1. build the demo corpus (eSpeak NG speech, procedural noise / wind / RIRs) in the official Track 1
     layout and print its summary table;
  2. draw a validation meta.tsv from the held-out sources with the official validation settings
     (`urgent_jax.simulation.generate_params`) and render it with the batched jit simulator
     (`urgent_jax.data.presimulate`).
Later layers extend this job: train -> enhance -> evaluate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from urgent_jax import prepare_runtime  # noqa: E402
from urgent_jax.data import demo_corpus, presimulate  # noqa: E402
from urgent_jax.data.manifest import write_meta_tsv  # noqa: E402
from urgent_jax.simulation.generate_params import generate_meta  # noqa: E402

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _load_config(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def build_validation_set(corpus_dir: str, out_dir: str, seed: int) -> dict:
    """Stage 2: meta.tsv from the validation sources, rendered into out_dir (official layout)."""
    meta_path = os.path.join(out_dir, "log", "meta.tsv")
    if not os.path.exists(meta_path):
        cfg = _load_config(os.path.join(REPO, "configs", "simulation", "validation.py"))
        rows = generate_meta(
            os.path.join(corpus_dir, "validation_sources"),
            output_dir=os.path.abspath(out_dir),
            seed=seed,
            sample_params=cfg.sample_params.to_dict(),
            **cfg.selection.to_dict(),
        )
        write_meta_tsv(meta_path, rows)
    summary = presimulate.presimulate(
        meta_path, os.path.join(corpus_dir, "validation_sources"), out_dir, batch_size=8, num_workers=0
    )
    print(presimulate.format_summary(summary))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quickstart", help="output directory")
    parser.add_argument("--size", default="small", choices=("small", "medium"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    prepare_runtime()
    t0 = time.time()
    corpus_dir = os.path.join(args.out, "corpus")
    print(f"[1/2] demo corpus -> {corpus_dir}", flush=True)
    summary = demo_corpus.build_demo_corpus(corpus_dir, seed=args.seed, size=args.size)
    demo_corpus.print_summary(summary)

    validation_dir = os.path.join(args.out, "validation")
    print(f"\n[2/2] validation set (generate_params + presimulate) -> {validation_dir}", flush=True)
    validation = build_validation_set(corpus_dir, validation_dir, args.seed)

    results = {"corpus": summary, "validation": validation, "wall_s": round(time.time() - t0, 1)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nquickstart done in {results['wall_s']} s; results in {args.out}/results.json")


if __name__ == "__main__":
    main()
