"""Parameter sampling against the official distributions (REFERENCE.md §2.1) and the meta.tsv syntax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from urgent_jax.simulation import params as P

N = 10_000
FS = 16000


@pytest.fixture(scope="module")
def drawn():
    fn = jax.jit(lambda k, n: P.sample_batch_params(k, n, sample_rate=FS, max_num_samples=64000))
    lengths = jnp.asarray(np.random.default_rng(0).integers(16000, 64001, N), jnp.int32)
    return jax.tree.map(np.asarray, fn(jax.random.PRNGKey(2024), lengths)), np.asarray(lengths)


def _chi2_ok(counts, probs, alpha=1e-3):
    expected = np.asarray(probs) / np.sum(probs) * np.sum(counts)
    return scipy.stats.chisquare(counts, expected).pvalue > alpha


def test_bernoullis(drawn):
    p, _ = drawn
    assert _chi2_ok(np.bincount(p.use_wind, minlength=2), [0.95, 0.05])
    assert _chi2_ok(np.bincount(p.use_rir, minlength=2), [0.5, 0.5])
    assert _chi2_ok(np.bincount(p.wind_clipping, minlength=2), [0.25, 0.75])


def test_number_and_choice_of_augmentations(drawn):
    p, _ = drawn
    count = (p.aug_position >= 0).sum(1)
    no_wind = ~p.use_wind
    assert _chi2_ok(np.bincount(count[no_wind], minlength=4), [0.25, 0.40, 0.20, 0.15])
    # Each slot holds each type equally often, slots are filled from 0 without gaps.
    for k in range(1, 4):
        rows = no_wind & (count == k)
        positions = p.aug_position[rows]
        assert np.all(np.sort(positions, axis=1)[:, -k:] == np.arange(k))
        for slot in range(k):
            types = np.argmax(positions == slot, axis=1)
            assert _chi2_ok(np.bincount(types, minlength=4), [1, 1, 1, 1])
    # With wind noise, clipping is never drawn.
    assert not np.any(p.use_wind & (p.aug_position[:, P.CLIPPING] >= 0))


def _ks_uniform(x, lo, hi):
    return scipy.stats.kstest(x, "uniform", args=(lo, hi - lo)).pvalue > 1e-3


def test_continuous_ranges(drawn):
    p, _ = drawn
    assert _ks_uniform(p.snr_db[~p.use_wind], -5, 20)
    assert _ks_uniform(p.snr_db[p.use_wind], -10, 15)
    assert _ks_uniform(p.clip_q_min, 0.0, 0.1) and _ks_uniform(p.clip_q_max, 0.9, 1.0)
    for field, (lo, hi) in [("wind_threshold", (0.1, 0.3)), ("wind_ratio", (1, 20)),
                            ("wind_attack_ms", (5, 100)), ("wind_release_ms", (5, 100)),
                            ("wind_sc_gain", (0.8, 1.2)), ("wind_clipping_threshold", (0.85, 1.0))]:
        assert _ks_uniform(getattr(p, field), lo, hi), field


def test_codec_and_bandwidth_choices(drawn):
    p, _ = drawn
    assert _chi2_ok(np.bincount(p.codec_id, minlength=3), [2, 1, 1])  # mp3 | ogg(vorbis, opus)
    mp3 = p.codec_id == 0
    assert _chi2_ok(np.bincount(p.codec_qscale[mp3], minlength=10)[1:], [1] * 9)
    assert _chi2_ok(np.bincount(p.codec_qscale[~mp3] + 1, minlength=11), [1] * 11)
    assert _chi2_ok(np.bincount(p.bw_method, minlength=4), [1, 1, 1, 1])
    assert set(np.unique(p.bw_fs_new)) == {8000}  # the only rate below 16 kHz
    fn = jax.jit(lambda k: P.sample_batch_params(k, jnp.full((4000,), 96000), sample_rate=48000,
                                                 max_num_samples=96000))
    q = jax.tree.map(np.asarray, fn(jax.random.PRNGKey(1)))
    values, counts = np.unique(q.bw_fs_new, return_counts=True)
    assert list(values) == [8000, 16000, 22050, 24000, 32000, 44100]
    assert _chi2_ok(counts, [1] * 6)
    r = jax.tree.map(np.asarray, jax.jit(lambda k: P.sample_batch_params(
        k, jnp.full((50,), 8000), sample_rate=8000, max_num_samples=8000))(jax.random.PRNGKey(0)))
    assert np.all(r.bw_fs_new == 8000) and np.all(r.bw_method == -1)


def _reference_packet_loss(rng, num_samples, fs):
    """The official generator (REFERENCE.md §2.7), numpy."""
    duration_ms = num_samples / fs * 1000
    num_packets = int(duration_ms // 20)
    rate = rng.uniform(0.05, 0.25)
    n_lost = int(round(rate * duration_ms / 20))
    lengths = []
    for _ in range(n_lost):
        lengths.append(rng.integers(1, 10))
        if n_lost - sum(lengths) <= 10:
            lengths.append(n_lost - sum(lengths))
            break
    starts = rng.choice(num_packets, len(lengths), replace=False)
    idx = set()
    for s, n in zip(starts, lengths):
        idx |= set(range(s, s + n))
    packet = 20 * fs // 1000
    return len([i for i in idx if i < -(-num_samples // packet)])  # packets that touch the signal


def test_packet_loss_matches_official_distribution(drawn):
    p, lengths = drawn
    packet = 20 * FS // 1000
    ours = np.array([p.packet_lost[i, : -(-lengths[i] // packet)].sum() for i in range(N)])
    rng = np.random.default_rng(0)
    ref = np.array([_reference_packet_loss(rng, n, FS) for n in lengths])
    # Same distribution of the lost fraction as the official generator (two-sample KS).
    assert scipy.stats.ks_2samp(ours / lengths, ref / lengths).pvalue > 1e-3
    assert abs(ours.mean() - ref.mean()) / ref.mean() < 0.03


def test_same_key_same_params_different_key_different():
    f = jax.jit(lambda k: P.sample_batch_params(k, jnp.full((8,), 32000), sample_rate=FS, max_num_samples=32000))
    a, b, c = f(jax.random.PRNGKey(0)), f(jax.random.PRNGKey(0)), f(jax.random.PRNGKey(1))
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not np.array_equal(a.snr_db, c.snr_db)


OFFICIAL_LINES = [
    "none",
    "bandwidth_limitation-kaiser_best->16000",
    "bandwidth_limitation-none->8000",
    "clipping(min=0.05328710042581452,max=0.9412823417385633)",
    "codec(format=mp3,encoder=None,qscale=4)",
    "codec(format=ogg,encoder=vorbis,qscale=-1)",
    "codec(format=ogg,encoder=opus,qscale=9)",
    "packet_loss(packet_loss_indices=[],packet_duration_ms=20)",
    "packet_loss(packet_loss_indices=[32, 33, 34, 7, 8, 130],packet_duration_ms=20)",
    "codec(format=mp3,encoder=None,qscale=4)/packet_loss(packet_loss_indices=[12, 13, 40],packet_duration_ms=20)",
    "wind_noise(threshold=0.2345,ratio=12.5,attack=31.0,release=77.25,sc_gain=1.01,clipping=True,"
    "clipping_threshold=0.9)/",
    "wind_noise(threshold=0.1,ratio=1.0,attack=5.0,release=100.0,sc_gain=0.8,clipping=False,"
    "clipping_threshold=0.85)/bandwidth_limitation-polyphase->24000/codec(format=ogg,encoder=vorbis,qscale=3)",
    "clipping(min=0.0,max=1.0)/bandwidth_limitation-scipy->22050/packet_loss(packet_loss_indices=[1],"
    "packet_duration_ms=20)",
]


@pytest.mark.parametrize("line", OFFICIAL_LINES)
def test_meta_syntax_round_trip(line):
    chain = P.parse_augmentation(line)
    assert P.format_augmentation(chain) == line
    # Through device params and back (packet indices come back sorted, floats as float32).
    prm = P.chain_to_params(chain, snr_db=3.0, use_rir=False, sample_rate=48000, max_num_samples=480000)
    back = P.params_to_chain(prm, sample_rate=48000, num_samples=480000)
    assert [type(i) for i in back.items] == [type(i) for i in chain.items]
    assert (back.wind is None) == (chain.wind is None)
    for a, b in zip(back.items, chain.items):
        if isinstance(a, P.PacketLossSpec):
            assert sorted(a.indices) == sorted(set(b.indices))
        elif isinstance(a, P.ClippingSpec):
            assert abs(a.q_min - b.q_min) < 1e-7 and abs(a.q_max - b.q_max) < 1e-7
        else:
            assert a == b


@pytest.mark.parametrize("bad", ["", "clipping(min=0.1)", "codec(format=wav,encoder=None,qscale=1)",
                                 "none/none", "clipping(min=0.1,max=0.9)/clipping(min=0.1,max=0.9)",
                                 "bandwidth_limitation-linear->8000",
                                 "codec(format=mp3,encoder=None,qscale=4)/wind_noise(threshold=0.1,ratio=1.0,"
                                 "attack=5.0,release=100.0,sc_gain=0.8,clipping=False,clipping_threshold=0.85)"])
def test_meta_syntax_rejects_unknown(bad):
    with pytest.raises(P.AugmentationSyntaxError):
        P.parse_augmentation(bad)


def test_sampled_params_format_and_parse(drawn):
    p, lengths = drawn
    for i in range(200):
        row = jax.tree.map(lambda a: a[i], p)
        chain = P.params_to_chain(row, sample_rate=FS, num_samples=int(lengths[i]))
        text = P.format_augmentation(chain)
        assert P.format_augmentation(P.parse_augmentation(text)) == text
        back = P.chain_to_params(P.parse_augmentation(text), snr_db=float(row.snr_db), use_rir=bool(row.use_rir),
                                 sample_rate=FS, max_num_samples=64000)
        np.testing.assert_array_equal(back.aug_position, row.aug_position)
        packet = 20 * FS // 1000
        valid = -(-int(lengths[i]) // packet)
        if row.aug_position[P.PACKET_LOSS] >= 0:
            np.testing.assert_array_equal(back.packet_lost[:valid], row.packet_lost[:valid])
