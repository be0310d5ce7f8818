"""Training objectives (rank 3): thin fp32 wrappers over audio ops, one value per example.

spectral.py     multi-resolution L1 (time + STFT magnitude), the BSRNN / TF-GridNet training loss
time_domain.py  SI-SNR and its loss (logged by the reference, weight 0)
flow.py         the FlowSE flow-matching loss (path, masked squared error), masked by lengths
"""

from urgent_jax.losses.flow import flow_matching_loss, flow_path, masked_sq_error
from urgent_jax.losses.spectral import multi_resolution_l1
from urgent_jax.losses.time_domain import si_snr, si_snr_loss

__all__ = [
    "flow_matching_loss",
    "flow_path",
    "masked_sq_error",
    "multi_resolution_l1",
    "si_snr",
    "si_snr_loss",
]
