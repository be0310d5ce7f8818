"""CLI: python -m urgent_jax.sqa.prepare --corpus NAME --root DIR --out DIR [--split S ...]."""

from __future__ import annotations

import argparse
import logging
import sys

from urgent_jax.sqa.prepare import CORPORA, PrepareError, prepare_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m urgent_jax.sqa.prepare", description=__doc__)
    parser.add_argument("--corpus", required=True, choices=sorted(CORPORA))
    parser.add_argument("--root", required=True, help="corpus directory in its official layout")
    parser.add_argument("--out", required=True, help="writes OUT/<corpus>/<split>/data.jsonl")
    parser.add_argument("--split", action="append", default=[], help="only these splits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        counts = prepare_corpus(args.corpus, args.root, args.out, tuple(args.split))
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, n in counts.items():
        print(f"{args.out}/{args.corpus}/{split}/data.jsonl: {n} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
