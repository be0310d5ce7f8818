"""Training (rank 5): one readable loop, train state, optimiser, sharding rules, checkpoints."""
