"""Per-group means of per-utterance scores joined with meta.tsv (Track 1 breakdown).

    python -m urgent_jax.evaluate.breakdown --scores_dir OUT --meta_tsv meta.tsv [--utt2lang FILE]

Writes OUT/BREAKDOWN.md (one markdown table per dimension: groups with counts, one column per
output) and OUT/breakdown.json. Ids are normalised as the official get_breakdown.py does (a uid that
contains `fileid` but does not start with it is matched on its `fileid...` part). Means ignore NaN.

Dimensions (REFERENCE.md §4.4): sampling rate (`fs=<fs>Hz`), SNR (5 dB bins), duration (5 s bins),
corpus (speech_sid before the first `_`), reverberation (`with_rir` / `no_rir`), distortion type,
language (utt2lang, keyed by utterance id or speech uid, else the official uid-substring rule).

Intended behaviour instead of the official bugs (REFERENCE.md §6.13): SNR bins floor to 5 dB, so
[-5,0) and [0,5) are separate bins (the official script truncates toward zero and merges (-5,5)
into one "0 dB" bin); distortion groups are augmentation *types*, and an utterance counts once in
each type its chain holds (`bandwidth_limitation`, `clipping`, `codec`, `packet_loss`,
`wind_noise`; `none` for a clean chain) instead of grouping by the leading name for two types and
by the whole string otherwise.
"""

from __future__ import annotations

import collections
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from urgent_jax.data.manifest import MetaRow, nanmean_scores, read_kv, read_meta_tsv
from urgent_jax.evaluate.report import arrow, read_score_dir
from urgent_jax.simulation.params import (
    AugmentationSyntaxError,
    BandwidthSpec,
    ClippingSpec,
    CodecSpec,
    PacketLossSpec,
    parse_augmentation,
)

SNR_BIN_DB = 5
DURATION_BIN_S = 5
BREAKDOWN_MD = "BREAKDOWN.md"
BREAKDOWN_JSON = "breakdown.json"
DIMENSIONS = {  # key -> section title
    "fs": "Sampling rate",
    "snr": "SNR",
    "duration": "Duration",
    "corpus": "Corpus",
    "reverberation": "Reverberation",
    "distortion": "Distortion type",
    "language": "Language",
}
_AUGMENTATION_NAMES = {
    BandwidthSpec: "bandwidth_limitation",
    ClippingSpec: "clipping",
    CodecSpec: "codec",
    PacketLossSpec: "packet_loss",
}
UNPARSED = "unparsed"  # an augmentation string outside the official syntax

PathLike = str | os.PathLike


def normalise_id(uid: str) -> str:
    """`sysA_fileid_12` -> `fileid_12` (the official rule); other ids unchanged."""
    if uid.startswith("fileid") or "fileid" not in uid:
        return uid
    return "fileid" + uid.split("fileid", 1)[1]


def _bin(value: float, width: int) -> int:
    return int(math.floor(value / width)) * width


def snr_group(snr_db: float) -> tuple[tuple, str]:
    """(sort key, label) of the floor bin: 3.2 -> `snr=[0,5)dB`, -0.5 -> `snr=[-5,0)dB`."""
    if not math.isfinite(snr_db):
        return (1, 0), f"snr={snr_db}dB"
    lo = _bin(snr_db, SNR_BIN_DB)
    return (0, lo), f"snr=[{lo},{lo + SNR_BIN_DB})dB"


def duration_group(length: int, sample_rate: int) -> tuple[tuple, str]:
    lo = _bin(length / sample_rate, DURATION_BIN_S)
    return (lo,), f"duration=[{lo},{lo + DURATION_BIN_S})s"


def distortion_types(augmentation: str) -> list[str]:
    """Types in a meta.tsv `augmentation` string, wind noise first; ['none'] if clean."""
    try:
        chain = parse_augmentation(augmentation)
    except AugmentationSyntaxError:
        return [UNPARSED]
    types = ["wind_noise"] if chain.wind is not None else []
    types += [_AUGMENTATION_NAMES[type(item)] for item in chain.items]
    return types or ["none"]


def row_groups(row: MetaRow, language: str) -> dict[str, list[tuple[tuple, str]]]:
    """dimension -> [(sort key, group label)] of one meta row (several for distortion types)."""
    return {
        "fs": [((row.fs,), f"fs={row.fs}Hz")],
        "snr": [snr_group(row.snr_db)],
        "duration": [duration_group(row.length, row.fs)],
        "corpus": [((), f"corpus={row.speech_sid.split('_', 1)[0]}")],
        "reverberation": [((), "no_rir" if row.rir_uid == "none" else "with_rir")],
        "distortion": [((), t) for t in distortion_types(row.augmentation)],
        "language": [((), f"lang={language}")],
    }


def compute_breakdown(
    scores: Mapping[str, Mapping[str, float]],
    meta_rows: Sequence[MetaRow],
    *,
    utt2lang: Mapping[str, str] | None = None,
) -> dict:
    """Group means of `scores` ({output: {uid: value}}) by every dimension.

    Returns {"outputs", "num_scored", "num_matched", "unmatched" (score uids without a meta row),
    "dimensions": {dimension: {group: {"count": utterances, "means": {output: nanmean}}}}} with
    numeric dimensions in increasing order and the others alphabetical.
    """
    from urgent_jax.data.presimulate import language_of  # heavy module (grain): import on use

    utt2lang = dict(utt2lang or {})
    meta = {normalise_id(r.id): r for r in meta_rows}
    uids = list(dict.fromkeys(uid for values in scores.values() for uid in values))
    members: dict[str, dict[tuple, list[str]]] = {
        d: collections.defaultdict(list) for d in DIMENSIONS
    }
    unmatched = []
    for uid in uids:
        key = normalise_id(uid)
        row = meta.get(key)
        if row is None:
            unmatched.append(uid)
            continue
        language = (
            utt2lang.get(key) or utt2lang.get(row.id) or language_of(row.speech_uid, utt2lang)
        )
        for dimension, groups in row_groups(row, language).items():
            for sort_key, label in groups:
                members[dimension][(sort_key, label)].append(uid)
    dimensions = {}
    for dimension, groups in members.items():
        table = {}
        for (_, label), group_uids in sorted(groups.items()):
            values = {o: [scores[o].get(u, math.nan) for u in group_uids] for o in scores}
            table[label] = {"count": len(group_uids), "means": nanmean_scores(values)}
        dimensions[dimension] = table
    return {
        "outputs": list(scores),
        "num_scored": len(uids),
        "num_matched": len(uids) - len(unmatched),
        "unmatched": unmatched,
        "dimensions": dimensions,
    }


def _cell(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "nan"


def format_markdown(breakdown: Mapping) -> str:
    """BREAKDOWN.md text: one table per dimension."""
    outputs = breakdown["outputs"]
    lines = [
        "# Breakdown",
        "",
        f"{breakdown['num_matched']} of {breakdown['num_scored']} scored utterances joined with "
        f"meta.tsv ({len(breakdown['unmatched'])} without a meta row). Means ignore NaN.",
        "",
        "SNR bins floor to 5 dB ([-5,0) and [0,5) are separate; the official get_breakdown.py "
        "truncates toward zero). An utterance counts in every distortion type of its augmentation "
        "chain (the official script groups by the whole string); `none` = no augmentation.",
    ]
    for dimension, title in DIMENSIONS.items():
        lines += ["", f"## {title}", ""]
        lines.append("| group | n | " + " | ".join(f"{o} {arrow(o)}" for o in outputs) + " |")
        lines.append("|---|---:|" + "---:|" * len(outputs))
        for label, stats in breakdown["dimensions"][dimension].items():
            cells = " | ".join(_cell(stats["means"][o]) for o in outputs)
            lines.append(f"| {label} | {stats['count']} | {cells} |")
    return "\n".join(lines) + "\n"


def json_safe(obj):
    """obj with non-finite floats as None (NaN is not JSON) and tuples as lists."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_breakdown(
    output_dir: PathLike,
    meta_tsv: PathLike | Sequence[MetaRow],
    *,
    utt2lang: PathLike | Mapping[str, str] | None = None,
    scores: Mapping[str, Mapping[str, float]] | None = None,
) -> dict:
    """Compute the breakdown of `scores` (default: read from output_dir) and write BREAKDOWN.md
    and breakdown.json into output_dir. `meta_tsv` is a file or its rows, `utt2lang` a file or a
    mapping."""
    out = Path(output_dir)
    if scores is None:
        scores = read_score_dir(out)
    if utt2lang is not None and not isinstance(utt2lang, Mapping):
        utt2lang = read_kv(utt2lang)
    if isinstance(meta_tsv, (str, os.PathLike)):
        meta_tsv = read_meta_tsv(meta_tsv)
    result = compute_breakdown(scores, meta_tsv, utt2lang=utt2lang)
    out.mkdir(parents=True, exist_ok=True)
    (out / BREAKDOWN_MD).write_text(format_markdown(result), encoding="utf-8")
    with open(out / BREAKDOWN_JSON, "w", encoding="utf-8") as f:
        json.dump(json_safe(result), f, indent=2)
    return result


# --- command line --------------------------------------------------------------------------------


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("scores_dir", None, "Score directory (RESULTS.txt + <OUTPUT>.scp).")
    flags.DEFINE_string("meta_tsv", None, "meta.tsv of the scored set.")
    flags.DEFINE_string("utt2lang", None, "Optional uid (or speech uid) -> language file.")


def main(argv) -> None:
    del argv
    from absl import app, flags

    f = flags.FLAGS
    if not f.scores_dir or not f.meta_tsv:
        raise app.UsageError("--scores_dir and --meta_tsv are required")
    result = write_breakdown(f.scores_dir, f.meta_tsv, utt2lang=f.utt2lang)
    print(format_markdown(result))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
