"""Training objectives (rank 3): thin fp32 wrappers over audio ops, one value per example.

spectral.py     multi-resolution L1 (time + STFT magnitude), the BSRNN / TF-GridNet training loss
time_domain.py  SI-SNR and its loss (logged by the reference, weight 0)
flow.py         generic flow-matching path and masked squared error (FlowSE builds on these)
"""

from urgent_jax.losses.flow import flow_path, masked_sq_error
from urgent_jax.losses.spectral import multi_resolution_l1
from urgent_jax.losses.time_domain import si_snr, si_snr_loss

__all__ = ["flow_path", "masked_sq_error", "multi_resolution_l1", "si_snr", "si_snr_loss"]
