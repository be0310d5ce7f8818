"""Curation rules: the URGENT 2025 speech filters (REFERENCE.md §5.2) as score thresholds.

    python -m urgent_jax.curation.score --speech_scp speech_sources.scp --out W/scores.tsv
    python -m urgent_jax.curation.filter --scores W/scores.tsv \
        --rules configs/curation/urgent2025.py --out W/curated [--resample]

Variants:
- (default) / `urgent2025`: every utterance needs speech_ratio >= 0.2 (the VAD filter; our jax VAD
  stands in for WebRTC VAD mode 2, see audio/quality.py); DNS5 LibriVox (`book_...` uids) also
  needs DNSMOS BAK >= 3.0; the CommonVoice English script's OVRL, SIG, BAK >= 3.0 is the `cv_en`
  corpus rule.
- `strict`: the above plus Distill-MOS >= 3.0 for every corpus, clipping_ratio <= 1e-3 and
  snr_db >= 15 (a quality-first subset in the spirit of "less is more", §5.3; thresholds ours).
- `demo`: for the offline eSpeak demo corpus (experiments/quickstart.py): speech_ratio >= 0.2,
  DNSMOS OVRL >= 2.6 and Distill-MOS >= 2.0, so that some synthetic voices are removed.

Keys are the rules of urgent_jax.curation.filter.filter_scores (unknown keys fail):
`min_scores` / `max_scores`: column -> bound for every utterance; `corpora`: (corpus name, uid
regular expression) pairs (first match wins, else "other"); `corpus_min_scores` /
`corpus_max_scores`: corpus -> column -> bound.
"""

import ml_collections


def get_config(arg: str = "urgent2025") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(
        dict(
            min_scores={"speech_ratio": 0.2},
            max_scores={},
            corpora=(  # (name, uid regex), tried in order (ConfigDict sorts dict keys)
                ("librivox", r"^book_"),
                ("cv_en", r"^common_voice_en_"),
                ("commonvoice", r"^common_voice_"),
                ("mls", r"^mls_"),
                ("vctk", r"^p\d+_.*_mic\d$"),
                ("ears", r"^p\d+_"),
                ("libritts", r"^\d+_\d+_\d+_\d+$"),
                ("demo", r"^demo_"),
            ),
            corpus_min_scores={
                "librivox": {"dnsmos_bak": 3.0},
                "cv_en": {"dnsmos_ovrl": 3.0, "dnsmos_sig": 3.0, "dnsmos_bak": 3.0},
            },
            corpus_max_scores={},
        )
    )
    if arg in ("", "urgent2025"):
        pass
    elif arg == "strict":
        c.min_scores = {"speech_ratio": 0.2, "distill_mos": 3.0, "snr_db": 15.0}
        c.max_scores = {"clipping_ratio": 1e-3}
    elif arg == "demo":
        c.corpus_min_scores = {"demo": {"dnsmos_ovrl": 2.6, "distill_mos": 2.0}}
    else:
        raise ValueError(f"unknown variant {arg!r} (urgent2025, strict, demo)")
    c.lock()
    return c
