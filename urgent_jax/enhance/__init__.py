"""Track 1 speech enhancement (rank 6): task glue, training and enhancement entry points."""
