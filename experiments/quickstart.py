"""The main job, run by `make quickstart`: everything offline on the embedded demo corpus.

    python experiments/quickstart.py --out runs/quickstart [--size small] [--seed 0]

Stages (each skipped when its outputs already exist, so a rerun resumes):
  1. build the demo corpus (eSpeak NG speech, procedural noise / wind / RIRs) in the official Track 1
     layout and print its summary table.
Later layers extend this job: simulate -> train -> enhance -> evaluate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from urgent_jax.data import demo_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quickstart", help="output directory")
    parser.add_argument("--size", default="small", choices=("small", "medium"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t0 = time.time()
    corpus_dir = os.path.join(args.out, "corpus")
    print(f"[1/1] demo corpus -> {corpus_dir}", flush=True)
    summary = demo_corpus.build_demo_corpus(corpus_dir, seed=args.seed, size=args.size)
    demo_corpus.print_summary(summary)

    results = {"corpus": summary, "wall_s": round(time.time() - t0, 1)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nquickstart done in {results['wall_s']} s; results in {args.out}/results.json")


if __name__ == "__main__":
    main()
