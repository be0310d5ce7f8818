"""urgent_jax: JAX/Flax speech enhancement and quality assessment for the URGENT 2026 challenge."""

__version__ = "0.1.0"
