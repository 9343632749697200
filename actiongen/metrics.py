"""Evaluation metrics for generated action clips.

MMD follows the Human3.6M protocol of the published 2D action generators (the MMD code shared by
SA-GCN and Kinetic-GAN): per action class, m generated and m real clips; an RBF kernel
k(x, y) = exp(-||x - y||^2 / b) for every b in 10^-4 ... 10^9; the estimate
sqrt(sum_{i != j} (Kxx_ij + Kyy_ij - 2 Kxy_ij) / (m (m - 1))); the largest value over b; then the
mean over the classes. MMD_seq treats a flattened clip (T x 30) as one sample; MMD_avg is the
per-frame MMD (frame t of every clip) averaged over the T frames, with b chosen after averaging.

Where an estimate of MMD^2 is negative, the reference code takes the square root of a negative
number (NaN) and its `if value > best` test then skips that bandwidth (for MMD_avg: a single
negative frame skips the bandwidth); the result is never below 0. `mmd_seq` and `mmd_avg` do the
same, so small MMDs between similar sets come out exactly as the published code would report them.

Diversity and multimodality follow Action2Motion; FID is the Frechet distance between Gaussians fitted
to recogniser features. Everything is computed in float64 numpy: on CPU its in-place exp is markedly
faster than torch's, and the kernel sums dominate the evaluation time.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

BANDWIDTHS: tuple[float, ...] = tuple(10.0**p for p in range(-4, 10))
# Kernel sums run over blocks of this many distances, so the working buffers stay in the CPU cache:
# exp over cache-resident blocks is several times faster here than over whole m x m matrices.
BLOCK = 1 << 16
# Terms with d/b > 700 (kernel values below e^-700 ~ 1e-304) count as exactly 0. exp would return
# subnormals or 0 there anyway, and such lanes knock numpy's vectorised exp off its fast path (10-60x).
MAX_EXPONENT = 700.0


def _as_float64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (..., m, n) between rows of x (..., m, d) and y (..., n, d)."""
    x, y = _as_float64(x), _as_float64(y)
    d = x @ np.swapaxes(y, -1, -2)
    d *= -2.0
    d += (x * x).sum(-1)[..., :, None]
    d += (y * y).sum(-1)[..., None, :]
    return np.maximum(d, 0.0, out=d)


def kernel_sums(distances: np.ndarray, bandwidths: tuple[float, ...] = BANDWIDTHS) -> np.ndarray:
    """sum_i exp(-d_i / b) over the squared distances d (n,), for each bandwidth b."""
    sums = np.zeros(len(bandwidths))
    buffer = np.empty(min(BLOCK, len(distances)))
    for start in range(0, len(distances), BLOCK):
        block = distances[start:start + BLOCK]
        out = buffer[:len(block)]
        low, high = block.min(), block.max()
        for k, b in enumerate(bandwidths):
            limit = MAX_EXPONENT * b
            if low > limit:
                continue
            if high > limit:  # only the few terms within reach go through exp
                sums[k] += np.exp(block[block <= limit] * (-1.0 / b)).sum()
                continue
            np.multiply(block, -1.0 / b, out=out)
            np.exp(out, out=out)
            sums[k] += out.sum()
    return sums


def mmd2_per_bandwidth(x: np.ndarray, y: np.ndarray,
                       bandwidths: tuple[float, ...] = BANDWIDTHS) -> np.ndarray:
    """Unbiased MMD^2 estimates (..., len(bandwidths)) of paired sample sets x, y (..., m, d).

    The protocol's estimator: the mean of Kxx + Kyy - 2 Kxy over all i != j, so the pairs (x_i, y_i) are
    left out of the cross term as well. Leading dimensions are independent problems (e.g. frames).
    """
    x, y = _as_float64(x), _as_float64(y)
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"MMD needs two sample sets of the same shape (..., m, d); got {x.shape} and {y.shape}")
    m = x.shape[-2]
    if m < 2:
        raise ValueError(f"MMD needs at least 2 samples per set; got {m}")
    lead = x.shape[:-2]
    x = x.reshape(-1, m, x.shape[-1])
    y = y.reshape(-1, m, y.shape[-1])
    # Kxx and Kyy are symmetric: twice their upper triangles replace the full matrices, a third fewer exps.
    upper = np.flatnonzero(np.triu(np.ones((m, m), dtype=bool), k=1))
    out = np.empty((len(x), len(bandwidths)))
    for i, (xi, yi) in enumerate(zip(x, y)):
        dxy = squared_distances(xi, yi)
        within = np.concatenate([np.take(squared_distances(xi, xi), upper),
                                 np.take(squared_distances(yi, yi), upper)])
        total = (2.0 * kernel_sums(within, bandwidths) - 2.0 * kernel_sums(dxy.ravel(), bandwidths)
                 + 2.0 * kernel_sums(np.diagonal(dxy).copy(), bandwidths))
        out[i] = total / (m * (m - 1))
    return out.reshape(*lead, len(bandwidths))


def _protocol_sqrt(mmd2: np.ndarray) -> np.ndarray:
    """sqrt, with NaN for negative estimates as in the reference code."""
    return np.sqrt(np.where(mmd2 >= 0.0, mmd2, np.nan))


def _best_bandwidth_value(values: np.ndarray) -> float:
    """The largest value over bandwidths; NaN (skipped) entries and the starting value 0 as in the reference."""
    return float(np.max(np.nan_to_num(values, nan=0.0), initial=0.0))


def mmd_seq(x: np.ndarray, y: np.ndarray, bandwidths: tuple[float, ...] = BANDWIDTHS) -> float:
    """MMD between clip sets x, y (m, T, D) with each clip flattened to one T*D-d sample."""
    x, y = _as_float64(x), _as_float64(y)
    flat = mmd2_per_bandwidth(x.reshape(len(x), -1), y.reshape(len(y), -1), bandwidths)
    return _best_bandwidth_value(_protocol_sqrt(flat))


def mmd_avg(x: np.ndarray, y: np.ndarray, bandwidths: tuple[float, ...] = BANDWIDTHS) -> float:
    """Frame-averaged MMD between clip sets x, y (m, T, D): per frame t, the MMD of {x_i[t]} and {y_i[t]}."""
    x, y = _as_float64(x), _as_float64(y)
    if x.ndim != 3:
        raise ValueError(f"clip sets must be (m, T, D); got {x.shape}")
    per_frame = mmd2_per_bandwidth(np.swapaxes(x, 0, 1), np.swapaxes(y, 0, 1), bandwidths)  # (T, nb)
    return _best_bandwidth_value(_protocol_sqrt(per_frame).mean(axis=0))


def paired_subsets(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                   max_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays of two random, equally large subsets of a and b (the protocol needs m samples of each),
    at most `max_size`, in random order (the estimator leaves out the pairs at equal positions)."""
    m = min(len(a), len(b), max_size if max_size is not None else len(a))
    return rng.permutation(len(a))[:m], rng.permutation(len(b))[:m]


def class_mmd(generated: Mapping[str, np.ndarray], real: Mapping[str, np.ndarray],
              bandwidths: tuple[float, ...] = BANDWIDTHS) -> dict:
    """MMD_avg and MMD_seq of each class and their means over the classes.

    `generated` and `real` map each class name to clips (m, T, D) with the same m for a class.
    """
    if set(generated) != set(real):
        raise ValueError(f"generated and real sets must have the same classes; got {sorted(generated)} "
                         f"and {sorted(real)}")
    per_class = {name: {"mmd_avg": mmd_avg(generated[name], real[name], bandwidths),
                        "mmd_seq": mmd_seq(generated[name], real[name], bandwidths),
                        "m": len(generated[name])}
                 for name in generated}
    return {"mmd_avg": float(np.mean([v["mmd_avg"] for v in per_class.values()])),
            "mmd_seq": float(np.mean([v["mmd_seq"] for v in per_class.values()])),
            "per_class": per_class}


def _random_distinct_pairs(n: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` uniformly random index pairs (i, j) with i != j among n items."""
    if n < 2:
        raise ValueError(f"need at least 2 samples to form pairs; got {n}")
    first = rng.integers(n, size=count)
    second = (first + rng.integers(1, n, size=count)) % n
    return first, second


def diversity(features: np.ndarray, rng: np.random.Generator, pairs: int = 200) -> float:
    """Action2Motion diversity: the mean feature distance over random pairs of clips of any class."""
    features = _as_float64(features)
    i, j = _random_distinct_pairs(len(features), pairs, rng)
    return float(np.linalg.norm(features[i] - features[j], axis=1).mean())


def multimodality(features: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                  pairs_per_class: int = 20) -> float:
    """Action2Motion multimodality: the mean feature distance over random same-class pairs, averaged
    over the classes present."""
    features, labels = _as_float64(features), np.asarray(labels)
    per_class = []
    for c in np.unique(labels):
        members = features[labels == c]
        i, j = _random_distinct_pairs(len(members), pairs_per_class, rng)
        per_class.append(np.linalg.norm(members[i] - members[j], axis=1).mean())
    return float(np.mean(per_class))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)) between two Gaussians.

    tr (C1 C2)^(1/2) = tr (S C2 S)^(1/2) with S = C1^(1/2): a symmetric PSD matrix, so eigh gives its
    square root stably (no complex parts as with a general matrix square root).
    """
    mu1, mu2, cov1, cov2 = (_as_float64(a) for a in (mu1, mu2, cov1, cov2))
    root1 = _symmetric_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (n, F)."""
    a, b = _as_float64(features_a), _as_float64(features_b)
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose largest logit is at the true label."""
    return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())
