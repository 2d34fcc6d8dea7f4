"""Distances between embeddings, at the bottom of the library: l2 normalization, the metric names, pairwise and
paired distances, and the rule saying which embeddings a metric compares.

* ``METRICS``: ``"euclidean"``, ``"sqeuclidean"``, ``"cosine"``; ``check_metric`` refuses any other name.
* ``l2_normalize``: row-wise ``x / max(||x||, sqrt(eps))`` in JAX; ``l2_normalize_numpy`` the same in NumPy at the
  array's own precision (host code in float64).
* ``comparable(query, gallery, metric, normalize)``: the two arrays the metric is applied to. The rule, everywhere
  (losses, ranking, separation, the Embedder): euclidean distances compare l2-normalized embeddings when
  ``normalize`` (the paper's); cosine normalizes by itself; sqeuclidean compares the embeddings as given.
* ``pairwise_distance``: ``[N, M]`` distances in JAX (differentiable, at least float32, highest matmul precision);
  ``sq_euclidean_expansion`` and ``inverse_norm`` are its pieces, shared with the blocked search
  (``evaluation/search.py``).
* ``paired_distance``: ``d(a_i, b_i)`` of paired rows in NumPy (the separation figures, float64).

Imports JAX and NumPy only.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["METRICS", "check_metric", "l2_normalize", "l2_normalize_numpy", "comparable", "pairwise_distance",
           "paired_distance", "inverse_norm", "sq_euclidean_expansion", "compute_dtype"]

EUCLIDEAN, SQEUCLIDEAN, COSINE = "euclidean", "sqeuclidean", "cosine"  # the metric names: here only
METRICS = (EUCLIDEAN, SQEUCLIDEAN, COSINE)
RANKING_METRICS = (EUCLIDEAN, COSINE)  # what evaluation ranks with: config.eval.metric, eval.py --metric, re-ranking

# Squared-norm floor for l2 normalization: a zero embedding maps to the zero
# vector (not NaN) and its gradient stays finite.
_NORM_EPS = 1e-12


def check_metric(metric: str) -> None:
    """Raises ValueError unless ``metric`` is one of ``METRICS``."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: valid metrics are {', '.join(METRICS)}")


def compute_dtype(x: jax.Array) -> jax.Array:
    """Casts to at least float32: bfloat16/float16 distances would be too coarse
    for the hinge comparisons, while float64 (x64 mode) is kept for exactness."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def inverse_norm(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """``1 / max(||x||, sqrt(eps))`` per row (over the last axis)."""
    return jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=keepdims), _NORM_EPS))


def l2_normalize(x: jax.Array) -> jax.Array:
    """x / max(||x||, sqrt(eps)) row-wise, shape preserved; a zero row stays zero."""
    return x * inverse_norm(x, keepdims=True)


def l2_normalize_numpy(x: np.ndarray) -> np.ndarray:
    """``l2_normalize`` in NumPy, in the array's own float dtype (float64 host code stays float64)."""
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=-1, keepdims=True), _NORM_EPS))


def comparable(query, gallery, metric: str = "euclidean", normalize: bool = True, *, numpy: bool = False):
    """``(query, gallery)`` as ``metric`` compares them: l2-normalized for ``"euclidean"`` when ``normalize``.

    The one statement of the rule. ``"cosine"`` normalizes by itself and ``"sqeuclidean"`` compares the
    embeddings as given, so for those both come back unchanged. ``numpy=True`` normalizes with
    ``l2_normalize_numpy`` (keeps float64), otherwise with ``l2_normalize`` (JAX).

    Raises:
      ValueError: for an unknown ``metric``.
    """
    check_metric(metric)
    if metric == "euclidean" and normalize:
        norm = l2_normalize_numpy if numpy else l2_normalize
        return norm(query), norm(gallery)
    return query, gallery


def sq_euclidean_expansion(a: jax.Array, b: Optional[jax.Array], sq_b: Optional[jax.Array] = None,
                           dot: Optional[jax.Array] = None) -> jax.Array:
    """``max(||a_i||^2 + ||b_j||^2 - 2 a_i.b_j, 0)``, ``[N, M]``: squared euclidean distances; ``sq_b``: the
    squared norms of the rows of ``b`` when a blocked caller has them already; ``dot``: ``a @ b.T`` when the
    caller computed it apart (then ``b`` is not read: on XLA's CPU backend the sums fused into the matmul run
    ~2.5x slower than after it)."""
    # HIGHEST precision: on accelerators the default matmul may run in
    # TF32/bf16, whose ~1e-3 relative error would swamp small distances.
    hi = jax.lax.Precision.HIGHEST
    sq_a = jnp.sum(a * a, axis=-1)
    if sq_b is None:
        sq_b = jnp.sum(b * b, axis=-1)
    # The expansion can round slightly below 0 for (near-)equal rows.
    if dot is None:
        dot = jnp.matmul(a, b.T, precision=hi)
    return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * dot, 0.0)


def pairwise_distance(
    a: jax.Array, b: Optional[jax.Array] = None, metric: str = "euclidean"
) -> jax.Array:
    """All pairwise distances between the rows of ``a`` and ``b``.

    Args:
      a: ``[N, D]``.
      b: ``[M, D]``; ``None`` means ``b = a`` (then the diagonal is exactly 0).
      metric: one of

        * ``"sqeuclidean"``: ``d2(i, j) = max(||a_i||^2 + ||b_j||^2 - 2 a_i.b_j, 0)``
        * ``"euclidean"``:   ``d(i, j) = sqrt(d2(i, j))``
        * ``"cosine"``:      ``d(i, j) = 1 - a_i.b_j / (||a_i|| ||b_j||)``,
          clipped to ``[0, 2]``

    Returns:
      ``[N, M]`` distances in at least float32.

    The gradient is finite everywhere, including where two rows coincide
    (distance 0): there the euclidean gradient is defined as 0.

    Raises:
      ValueError: for an unknown ``metric``.
    """
    check_metric(metric)
    same = b is None
    a = compute_dtype(a)
    b = a if same else compute_dtype(b)
    dtype = jnp.promote_types(a.dtype, b.dtype)
    a, b = a.astype(dtype), b.astype(dtype)

    if metric == "cosine":
        cos = jnp.matmul(l2_normalize(a), l2_normalize(b).T, precision=jax.lax.Precision.HIGHEST)
        # Rounding can push |cos| a hair past 1; keep the distance in [0, 2].
        dist = jnp.clip(1.0 - cos, 0.0, 2.0)
    else:
        dist = sq_euclidean_expansion(a, b)
        if metric == "euclidean":
            # "Double where": sqrt'(0) = inf and inf * 0 = NaN in the backward
            # pass, so sqrt only ever sees a safe positive argument; the outer
            # where returns the exact value 0 with a zero gradient.
            pos = dist > 0.0
            dist = jnp.where(pos, jnp.sqrt(jnp.where(pos, dist, 1.0)), 0.0)

    if same:
        # Rounding in the expansion leaves ~1e-7 (sqrt -> ~3e-4) on the
        # diagonal; d(x, x) = 0 exactly and its gradient is 0.
        dist = jnp.where(jnp.eye(dist.shape[0], dtype=bool), 0.0, dist)
    return dist


def _paired_sqeuclidean(a, b):
    d = a - b
    return np.einsum("ij,ij->i", d, d)


# Paired distances d(a_i, b_i) of rows a, b [n, D] -> [n], in NumPy at the arrays' precision.
_PAIRED = {
    "euclidean": lambda a, b: np.sqrt(_paired_sqeuclidean(a, b)),
    "sqeuclidean": _paired_sqeuclidean,
    "cosine": lambda a, b: np.clip(
        1.0 - np.sum(a * b, axis=1)
        / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12), 0.0, 2.0),
}


def paired_distance(a: np.ndarray, b: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """``d(a_i, b_i)`` for paired rows ``a``, ``b`` ``[n, D]`` -> ``[n]``, in NumPy (as ``pairwise_distance``'s
    diagonal, computed directly rather than through the expansion).

    Raises:
      ValueError: for an unknown ``metric``.
    """
    check_metric(metric)
    return _PAIRED[metric](a, b)
