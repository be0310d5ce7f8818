"""Simulation (rank 1): the URGENT distortions as pure jax functions, parameters, wind noise."""
