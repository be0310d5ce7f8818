"""Wind-noise generator (REFERENCE.md §2.6): determinism, level, spectrum, the LSF -> LPC step."""

import numpy as np
import pytest

from urgent_jax.simulation import wind


def _low_frequency_share(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> float:
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / sample_rate)
    return float(power[freqs < cutoff_hz].sum() / power.sum())


def test_deterministic_finite_and_peak_normalised():
    a = wind.generate_wind_noise(3.0, 16000, gustiness=6.5, seed=11)
    b = wind.generate_wind_noise(3.0, 16000, gustiness=6.5, seed=11)
    c = wind.generate_wind_noise(3.0, 16000, gustiness=6.5, seed=12)
    assert a.dtype == np.float32 and a.shape == (48000,)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.isfinite(a))
    assert np.max(np.abs(a)) == pytest.approx(0.95, abs=1e-6)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 48000])
def test_spectrum_is_dominated_by_low_frequencies(sample_rate):
    for seed, gustiness in ((1, 3.2), (2, 9.7)):
        x = wind.generate_wind_noise(4.0, sample_rate, gustiness, seed)
        assert x.shape == (4 * sample_rate,)
        assert _low_frequency_share(x, sample_rate, 500.0) > 0.8


def test_gusts_modulate_the_level():
    # The long-term gain follows the speed profile: the short-time level varies by > 6 dB.
    x = wind.generate_wind_noise(6.0, 16000, gustiness=8.0, seed=3).astype(np.float64)
    frames = x[: x.size // 1600 * 1600].reshape(-1, 1600)  # 100 ms
    level_db = 10 * np.log10(np.mean(frames**2, axis=-1) + 1e-12)
    assert level_db.max() - np.median(level_db) > 6.0


def _roots_on_unit_circle(poly: np.ndarray) -> np.ndarray:
    """Angles in (0, pi) of the roots of a polynomial in z^-1 (coefficients of z^0, z^-1, ...)."""
    roots = np.roots(poly)
    np.testing.assert_allclose(np.abs(roots), 1.0, atol=1e-6)
    angles = np.angle(roots)
    return np.sort(angles[(angles > 1e-6) & (angles < np.pi - 1e-6)])


@pytest.mark.parametrize("order", [4, 5, 6])
def test_lsf_to_lpc_against_the_root_definition(order, rng):
    lsf_sets = [np.sort(rng.uniform(0.05, 3.05, order)) for _ in range(5)]
    if order == 5:
        lsf_sets += [wind.speed_to_lsf(s) for s in (2.0, 5.0, 9.0, 13.0, 18.0)]
    for lsf in lsf_sets:
        a = wind.lsf_to_lpc(lsf)
        assert a.shape == (order + 1,) and a[0] == pytest.approx(1.0)
        # Independent check: P(z) = A(z) + z^-(p+1) A(1/z), Q(z) = A(z) - z^-(p+1) A(1/z) have all
        # their roots on the unit circle; the non-trivial ones sit at the LSF angles, interlaced.
        extended = np.concatenate([a, [0.0]])
        sym = _roots_on_unit_circle(extended + extended[::-1])
        anti = _roots_on_unit_circle(extended - extended[::-1])
        np.testing.assert_allclose(sym, lsf[0::2], atol=1e-6)
        np.testing.assert_allclose(anti, lsf[1::2], atol=1e-6)
        # Interlaced LSFs give a minimum-phase A(z): a stable all-pole filter.
        assert np.max(np.abs(np.roots(a))) < 1.0


def test_speed_polynomials():
    s = np.array([1.0, 2.0, 7.5, 18.0, 30.0])
    lsf = wind.speed_to_lsf(s)
    clipped = np.clip(s, 2.0, 18.0)
    for k in range(5):
        np.testing.assert_allclose(lsf[:, k], np.polyval(wind.LSF_POLY[:, k], clipped), rtol=1e-12)
    # Over the valid speed range the LSFs stay increasing inside (0, pi).
    grid = wind.speed_to_lsf(np.linspace(2.0, 18.0, 321))
    assert np.all(np.diff(grid, axis=-1) > 0) and grid.min() > 0 and grid.max() < np.pi


def test_rejects_empty_length():
    with pytest.raises(ValueError):
        wind.generate_wind_noise(0.0, 16000, 5.0, 0)
