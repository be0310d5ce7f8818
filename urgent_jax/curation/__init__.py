"""Corpus curation: batched quality scoring (score.py), rule-based filtering to curated source
lists with a report (filter.py). ArrayRecord packing lives in data/pack.py."""
