import math

import numpy as np
import pytest

from actiongen import metrics
from actiongen.metrics import (BANDWIDTHS, accuracy, class_mmd, diversity, fid, frechet_distance, mmd2_per_bandwidth,
                               mmd_avg, mmd_seq, multimodality, paired_subsets)


def naive_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """The published per-bandwidth estimate of MMD^2, with explicit loops over the pairs."""
    m = len(x)

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / bandwidth)

    total = sum(k(x[i], x[j]) + k(y[i], y[j]) - 2 * k(x[i], y[j])
                for i in range(m) for j in range(m) if i != j)
    return total / (m * (m - 1))


def naive_mmd(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """sqrt of the estimate; NaN where it is negative, as numpy's sqrt gives in the reference."""
    value = naive_mmd2(x, y, bandwidth)
    return math.sqrt(value) if value >= 0 else math.nan


def naive_protocol(x: np.ndarray, y: np.ndarray, mode: str) -> float:
    """The published sweep: best = 0; keep a bandwidth's value only if it is larger (NaN never is)."""
    best = 0.0
    for b in BANDWIDTHS:
        if mode == "seq":
            value = naive_mmd(x.reshape(len(x), -1), y.reshape(len(y), -1), b)
        else:
            value = sum(naive_mmd(x[:, t], y[:, t], b) for t in range(x.shape[1])) / x.shape[1]
        if value > best:
            best = value
    return best


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_mmd2_matches_double_loop_for_every_bandwidth(rng):
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)) + 0.7
    expected = [naive_mmd2(x, y, b) for b in BANDWIDTHS]
    np.testing.assert_allclose(mmd2_per_bandwidth(x, y), expected, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_mmd_avg_and_seq_match_double_loop_protocol(seed):
    rng = np.random.default_rng(seed)
    # Same distribution for both sets so that some per-frame estimates come out negative.
    x, y = rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 3, 2)) * (1 + 0.5 * seed)
    assert mmd_avg(x, y) == pytest.approx(naive_protocol(x, y, "avg"), rel=1e-9, abs=1e-12)
    assert mmd_seq(x, y) == pytest.approx(naive_protocol(x, y, "seq"), rel=1e-9, abs=1e-12)


def test_mmd_of_a_set_with_itself_is_zero(rng):
    x = rng.normal(size=(40, 5, 3))
    assert mmd_avg(x, x) == pytest.approx(0.0, abs=1e-6)
    assert mmd_seq(x, x) == pytest.approx(0.0, abs=1e-6)


def test_mmd_grows_as_one_set_is_shifted(rng):
    x, y = rng.normal(size=(60, 4, 3)), rng.normal(size=(60, 4, 3))
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0]
    avg = [mmd_avg(x, y + s) for s in shifts]
    seq = [mmd_seq(x, y + s) for s in shifts]
    assert np.all(np.diff(avg) > 0), avg
    assert np.all(np.diff(seq) > 0), seq
    assert avg[0] < 0.1 and avg[-1] > 1.0


def test_bandwidth_sweep_picks_the_maximum(rng):
    x, y = rng.normal(size=(30, 4, 3)), rng.normal(size=(30, 4, 3)) * 1.5 + 0.3
    per_b = np.array([mmd_seq(x, y, bandwidths=(b,)) for b in BANDWIDTHS])
    best = int(per_b.argmax())
    assert 0 < best < len(BANDWIDTHS) - 1, "the test needs an interior maximum"
    assert mmd_seq(x, y) == pytest.approx(per_b[best], rel=1e-12)
    assert mmd_seq(x, y) > np.delete(per_b, best).max()
    per_b_avg = np.array([mmd_avg(x, y, bandwidths=(b,)) for b in BANDWIDTHS])
    assert mmd_avg(x, y) == pytest.approx(per_b_avg.max(), rel=1e-12)


def test_negative_estimate_skips_the_bandwidth_as_in_the_reference():
    # m = 2, x = (0, 1), y = (1, 0): the only cross pairs left (x_0, y_1) and (x_1, y_0) are identical
    # points, so the estimate 2 (2 k(0, 1) - 2) / 2 is negative at every bandwidth.
    x = np.array([[[0.0]], [[1.0]]])
    y = x[::-1].copy()
    assert np.all(mmd2_per_bandwidth(x[:, 0], y[:, 0]) < 0)
    assert mmd_seq(x, y) == 0.0
    # One frame negative everywhere, one far apart: a negative frame discards the whole bandwidth, so the
    # frame average is 0 (clamping that frame at 0 instead would give about half the far frame's MMD).
    far = np.concatenate([x, x + np.array([[[0.0]], [[0.5]]])], axis=1)
    far_y = np.concatenate([y, x + 10.0], axis=1)
    assert mmd_seq(far[:, 1:], far_y[:, 1:]) > 0.5
    assert mmd_avg(far, far_y) == 0.0


def test_mmd_rejects_unpaired_sets(rng):
    with pytest.raises(ValueError, match="same shape"):
        mmd_seq(rng.normal(size=(5, 2, 3)), rng.normal(size=(6, 2, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        mmd_seq(rng.normal(size=(1, 2, 3)), rng.normal(size=(1, 2, 3)))


def test_kernel_sums_cross_block_boundaries(rng, monkeypatch):
    distances = rng.uniform(0, 50, size=1000)
    expected = [np.exp(-distances / b).sum() for b in BANDWIDTHS]
    monkeypatch.setattr(metrics, "BLOCK", 64)
    np.testing.assert_allclose(metrics.kernel_sums(distances), expected, rtol=1e-12, atol=1e-300)


def test_class_mmd_is_the_mean_over_classes(rng):
    generated = {"a": rng.normal(size=(20, 3, 2)), "b": rng.normal(size=(20, 3, 2))}
    real = {"a": rng.normal(size=(20, 3, 2)), "b": rng.normal(size=(20, 3, 2)) + 2.0}
    result = class_mmd(generated, real)
    for name in generated:
        assert result["per_class"][name]["mmd_avg"] == mmd_avg(generated[name], real[name])
        assert result["per_class"][name]["mmd_seq"] == mmd_seq(generated[name], real[name])
        assert result["per_class"][name]["m"] == 20
    assert result["per_class"]["b"]["mmd_avg"] > result["per_class"]["a"]["mmd_avg"]
    assert result["mmd_avg"] == pytest.approx(np.mean([v["mmd_avg"] for v in result["per_class"].values()]))
    assert result["mmd_seq"] == pytest.approx(np.mean([v["mmd_seq"] for v in result["per_class"].values()]))
    with pytest.raises(ValueError, match="same classes"):
        class_mmd(generated, {"a": real["a"]})


def test_paired_subsets_are_equal_sized_and_distinct(rng):
    a, b = np.zeros((7, 2)), np.zeros((12, 2))
    i, j = paired_subsets(a, b, rng)
    assert len(i) == len(j) == 7 and len(set(j)) == 7 and set(i) == set(range(7))
    i, j = paired_subsets(a, b, rng, max_size=3)
    assert len(i) == len(j) == 3


def test_diversity_of_equidistant_features(rng):
    scale = 2.5
    features = scale * np.eye(12)  # every two distinct rows are scale * sqrt(2) apart
    assert diversity(features, rng) == pytest.approx(scale * math.sqrt(2))
    assert diversity(features, rng, pairs=3) == pytest.approx(scale * math.sqrt(2))


def test_multimodality_averages_within_class_distances(rng):
    # Class 0: rows sqrt(2) apart; class 1: rows 3 sqrt(2) apart; classes far from each other.
    features = np.concatenate([np.eye(8), 3 * np.eye(8) + 100.0])
    labels = np.repeat([0, 1], 8)
    order = rng.permutation(16)
    assert multimodality(features[order], labels[order], rng) == pytest.approx(2 * math.sqrt(2))
    with pytest.raises(ValueError, match="at least 2"):
        multimodality(features[:9], labels[:9], rng)


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form(rng):
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, size=5), rng.uniform(0.5, 2, size=5)
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-10)
    # Rotating both Gaussians together changes nothing.
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(s1**2) @ q.T, q @ mu2, q @ np.diag(s2**2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_matches_scipy_sqrtm_for_non_commuting_covariances(rng):
    linalg = pytest.importorskip("scipy.linalg")
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    expected = np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(np.zeros(6), c1, np.zeros(6), c2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_samples(rng):
    a = rng.normal(size=(500, 4))
    assert fid(a, a) == pytest.approx(0.0, abs=1e-8)
    mu, scale = np.array([1.0, 0.0, -1.0, 2.0]), np.array([1.0, 2.0, 0.5, 1.0])
    b = rng.normal(size=(200_000, 4)) * scale + mu
    c = rng.normal(size=(200_000, 4))
    assert fid(b, c) == pytest.approx((mu**2).sum() + ((scale - 1) ** 2).sum(), rel=0.02)


def test_accuracy():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0], [1.0, 0.0]])
    assert accuracy(logits, np.array([0, 1, 1, 1])) == 0.5
