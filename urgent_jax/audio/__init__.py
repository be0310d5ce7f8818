"""Audio DSP core (rank 0): jax.numpy primitives batched over leading axes, plus soundfile I/O."""
