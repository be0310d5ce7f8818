"""The progress bar's postfix: numbers formatted, metrics the task does not log left out."""

from urgent_jax.train.writers import ProgressBar


def test_progress_bar_leaves_out_missing_metrics():
    # Before: FlowSE runs showed "si_snr=None" on every update.
    bar = ProgressBar(2, enabled=True)
    bar.update(1, loss=1960.4, si_snr=None, gnorm=2.07e3, skipped=0)
    assert bar.bar.postfix == "loss=1.96e+03, gnorm=2.07e+03, skipped=0"
    bar.close()
