"""Evaluate (rank 4): scoring over scp lists, breakdown by meta.tsv, reports, leaderboard ranking.

- `score.py`: the standalone scoring command (`python -m urgent_jax.evaluate.score`) and `score()`;
- `breakdown.py`: per-group means joined with meta.tsv (BREAKDOWN.md, breakdown.json);
- `report.py`: report.md + figures, and the readers of a score directory;
- `ranking.py`: the official dense-rank leaderboard procedure over RESULTS.txt files.
"""
