"""Metrics (rank 1): pure metric functions on padded batches, (ref, est, lengths, fs) -> [batch]."""
