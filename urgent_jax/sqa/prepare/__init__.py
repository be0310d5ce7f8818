"""Track 2 corpus preparation: the official corpora's documented layouts -> data.jsonl.

    python -m urgent_jax.sqa.prepare --corpus bvcc --root /db/bvcc --out data
    # -> data/bvcc/{train,dev,test}/{wav.scp, utt2sys, utt2dur, mos.scp, data.jsonl}

Modules: tables.py (CSV / xlsx rows with file:line errors), scp.py (ratings -> one split directory,
the official csv2data step), corpora.py (one reader per corpus, `CORPORA` registry; the facts used
and the official commit they come from are in its docstring).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from urgent_jax.sqa.prepare.corpora import CORPORA
from urgent_jax.sqa.prepare.scp import write_split
from urgent_jax.sqa.prepare.tables import PrepareError

logger = logging.getLogger(__name__)


def prepare_corpus(
    corpus: str, root: str | os.PathLike, out: str | os.PathLike, splits: tuple[str, ...] = ()
) -> dict[str, int]:
    """Write out/<corpus>/<split>/ for every split (or only `splits`); returns split -> #files."""
    if corpus not in CORPORA:
        raise PrepareError(f"unknown corpus {corpus!r} (known: {', '.join(CORPORA)})")
    root = Path(root)
    if not root.is_dir():
        raise PrepareError(f"{root}: corpus root is not a directory")
    counts = {}
    for split, ratings in CORPORA[corpus](root).items():
        if splits and split not in splits:
            continue
        records = write_split(ratings, Path(out) / corpus / split)
        counts[split] = len(records)
        logger.info("%s/%s: %d files from %d ratings", corpus, split, len(records), len(ratings))
    return counts


__all__ = ["CORPORA", "PrepareError", "prepare_corpus"]
