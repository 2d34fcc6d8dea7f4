"""Metric-learning and classification losses for person re-identification, each metric loss registered by name.

Implements the losses compared in "Margin Sample Mining Loss: A Deep Learning
Based Method for Person Re-identification" (Xiao, Luo, Zhang 2017). Registered
in ``LOSSES`` (the names ``config.loss`` accepts, in this order):

* ``"cls"``        -- ``no_metric_loss``: 0, classification only,
* ``"triplet"``    -- ``triplet_loss``, eq. 1, triplets sampled at random,
* ``"quadruplet"`` -- ``quadruplet_loss``, eq. 2 (Chen et al. 2017), sampled at random,
* ``"trihard"``    -- ``trihard_loss``, eq. 4, batch-hard triplet (Hermans et al. 2017),
* ``"msml"``       -- ``msml_loss``, eq. 5, margin sample mining (one hinge per batch; the paper's, ``PAPER_LOSS``).

Not registered: ``batch_all_triplet_loss`` (hinge averaged over every valid
triplet) and ``classification_loss`` (softmax cross-entropy with label
smoothing, added to every metric loss by the train step); plus the helper
``hardest_pairs``. ``pairwise_distance`` and ``l2_normalize`` live in
``msml_jax.distances`` (re-exported here).

Adding a loss is one registration; the config schema, the train step and the
reproduction driver read ``LOSSES``::

    @register_loss("contrastive", hyperparameters={"margin": "margin", "normalize": "normalize"})
    def contrastive_loss(embeddings, labels, margin=0.3, normalize=True):
        ...  # scalar

``hyperparameters`` maps each keyword of the function to the ``StepSettings`` /
config field it is read from; ``random=True`` passes a fresh PRNG ``key=`` each
step; ``needs_pairs=False`` allows batches without positive or negative pairs
(P or K of 1); ``soft_margin=True`` declares a ``soft_margin`` form.

Conventions shared by every metric loss:

* ``embeddings`` is a float array ``[N, D]`` (any float dtype; computation
  happens in at least float32) and ``labels`` an integer array ``[N]`` in any
  order -- identities need not be contiguous or equally represented.
* A *positive* of anchor ``a`` is any ``j != a`` with ``labels[j] ==
  labels[a]``; a *negative* is any ``j`` with ``labels[j] != labels[a]``.
  An anchor is *valid* when it has at least one of each.
* When nothing valid exists (a single identity, or only singleton
  identities), the loss is exactly ``0.0`` with zero, finite gradients rather
  than NaN: a degenerate batch then simply contributes no training signal.
* Everything is pure and free of data-dependent shapes, so it can be
  ``jax.jit``-ed and ``jax.vmap``-ed. Python-level switches (``metric``,
  ``normalize``, ``soft_margin``) must be static under ``jit``; margins may be
  traced.
* ``normalize=True`` l2-normalizes the embeddings first, as the paper does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import optax

from msml_jax.distances import EUCLIDEAN, compute_dtype, l2_normalize, pairwise_distance

__all__ = [
    "LOSSES",
    "PAPER_LOSS",
    "LossSpec",
    "register_loss",
    "metric_loss",
    "no_metric_loss",
    "pairwise_distance",
    "hardest_pairs",
    "msml_loss",
    "trihard_loss",
    "triplet_loss",
    "batch_all_triplet_loss",
    "quadruplet_loss",
    "classification_loss",
    "l2_normalize",
]


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered metric loss.

    ``fn(embeddings [N, D], labels [N], *, key=..., **hyperparameters) -> scalar``; ``hyperparameters`` maps
    each keyword of ``fn`` to the settings field it is read from (quadruplet: ``alpha`` <- ``margin``);
    ``random``: ``fn`` takes a PRNG ``key``; ``needs_pairs``: every batch must hold positive and negative
    pairs (P >= 2 and K >= 2); ``soft_margin``: ``fn`` has a soft-margin form (its ``soft_margin`` keyword).
    """

    name: str
    fn: Callable[..., jax.Array]
    hyperparameters: Mapping[str, str]
    random: bool = False
    needs_pairs: bool = True
    soft_margin: bool = False


LOSSES: Dict[str, LossSpec] = {}
PAPER_LOSS = "msml"  # the paper's loss: the reference of the reproduction tables


def register_loss(name: str, *, hyperparameters: Mapping[str, str] = (), random: bool = False,
                  needs_pairs: bool = True, soft_margin: bool = False):
    """Decorator: registers ``fn`` as the metric loss ``name`` (see ``LossSpec``) and returns it unchanged.

    Raises:
      ValueError: when ``name`` is taken.
    """
    def register(fn):
        if name in LOSSES:
            raise ValueError(f"a loss named {name!r} is already registered ({LOSSES[name].fn.__qualname__})")
        LOSSES[name] = LossSpec(name, fn, dict(hyperparameters), random, needs_pairs, soft_margin)
        return fn

    return register


def metric_loss(settings: Any, embeddings: jax.Array, labels: jax.Array, key: jax.Array) -> jax.Array:
    """The metric loss ``settings.loss`` on one batch, its hyperparameters read from ``settings`` (any object
    with the fields its ``LossSpec`` names, e.g. ``training.steps.StepSettings``); ``key`` is used by random
    losses only.

    Raises:
      ValueError: for an unregistered loss name.
    """
    spec = LOSSES.get(settings.loss)
    if spec is None:
        raise ValueError(f"unknown loss {settings.loss!r}: valid names are {', '.join(LOSSES)}")
    kwargs = {kwarg: getattr(settings, field) for kwarg, field in spec.hyperparameters.items()}
    if spec.random:
        kwargs["key"] = key
    return spec.fn(embeddings, labels, **kwargs)


# Loss keyword -> settings field, shared by the registrations below.
_MARGIN = {"margin": "margin", "normalize": "normalize"}
_HARD_MINING = {**_MARGIN, "soft_margin": "soft_margin"}


def _prepare(embeddings: jax.Array, normalize: bool) -> jax.Array:
    x = compute_dtype(embeddings)
    return l2_normalize(x) if normalize else x

def _pair_masks(labels: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """``pos[i, j]``: same label and ``i != j``; ``neg[i, j]``: different label."""
    labels = jnp.asarray(labels)
    same = labels[:, None] == labels[None, :]
    eye = jnp.eye(labels.shape[0], dtype=bool)
    return same & ~eye, ~same


def _masked_max(x: jax.Array, mask: jax.Array, axis=None) -> Tuple[jax.Array, jax.Array]:
    """Max of ``x`` over ``mask`` along ``axis`` and whether any entry was there.

    Masked entries are replaced by the dtype's finite minimum (not -inf) and
    empty reductions are reported as 0, so neither inf nor NaN can reach the
    value or the gradient.
    """
    fill = jnp.finfo(x.dtype).min
    m = jnp.max(jnp.where(mask, x, fill), axis=axis)
    any_ = jnp.any(mask, axis=axis)
    return jnp.where(any_, m, 0.0), any_


def _masked_min(x: jax.Array, mask: jax.Array, axis=None) -> Tuple[jax.Array, jax.Array]:
    """Min of ``x`` over ``mask``; see ``_masked_max``."""
    m, any_ = _masked_max(-x, mask, axis=axis)
    return -m, any_


def _hardest(dist: jax.Array, labels: jax.Array):
    """Per-anchor hardest positive/negative plus has-positive/has-negative flags.

    Each value is 0 where its own set is empty (not where the anchor is
    invalid): msml needs negative pairs between two singletons, which are not
    valid anchors.
    """
    dist = compute_dtype(dist)
    pos_mask, neg_mask = _pair_masks(labels)
    hardest_pos, has_pos = _masked_max(dist, pos_mask, axis=1)
    hardest_neg, has_neg = _masked_min(dist, neg_mask, axis=1)
    return hardest_pos, hardest_neg, has_pos, has_neg


def hardest_pairs(dist: jax.Array, labels: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Hardest positive and negative distance of every anchor.

    ``hardest_pos[a] = max_{p != a, y_p = y_a} dist[a, p]`` and
    ``hardest_neg[a] = min_{n: y_n != y_a} dist[a, n]``.

    Args:
      dist: ``[N, N]`` pairwise distances (e.g. from ``pairwise_distance``).
      labels: ``[N]`` integer identities, any order.

    Returns:
      ``(hardest_pos [N], hardest_neg [N], valid [N] bool)`` where ``valid[a]``
      says that ``a`` has at least one positive and one negative. Where
      ``valid`` is False both distances are 0 (never +-inf or NaN).
    """
    hardest_pos, hardest_neg, has_pos, has_neg = _hardest(dist, labels)
    valid = has_pos & has_neg
    return (
        jnp.where(valid, hardest_pos, 0.0),
        jnp.where(valid, hardest_neg, 0.0),
        valid,
    )


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``x`` over ``mask``; 0 when the mask is empty (no 0/0)."""
    count = jnp.sum(mask)
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(count, 1).astype(x.dtype)


def _gumbel_noise(key: jax.Array, num: int, n: int) -> jax.Array:
    """``num`` independent ``[n, n]`` Gumbel(0, 1) noise matrices from one key.

    Drawn flat and reshaped: with the default threefry PRNG, XLA:CPU compiles
    a 1-D draw several times faster than a multi-dimensional one (or several
    split draws), and the distribution is the same.
    """
    return jax.random.gumbel(key, (num * n * n,)).reshape(num, n, n)


def _sample_index(noise: jax.Array, mask: jax.Array) -> jax.Array:
    """Per row, an index drawn uniformly among the True entries of ``mask``.

    Gumbel-argmax: the argmax of i.i.d. Gumbel noise restricted to the mask is
    uniform over it, with static shapes. Rows with an empty mask return an
    arbitrary index; callers must mask those rows out.
    """
    return jnp.argmax(jnp.where(mask, noise, -jnp.inf), axis=-1)


def _rows(x: jax.Array, idx: jax.Array) -> jax.Array:
    """``x[i, idx[i]]`` for every row ``i``."""
    return jnp.take_along_axis(x, idx[:, None], axis=1)[:, 0]


@register_loss("cls", needs_pairs=False)
def no_metric_loss(embeddings: jax.Array, labels: jax.Array) -> jax.Array:
    """No metric loss: ``L = 0`` (float32 scalar), training on the classification loss alone."""
    return jnp.zeros((), jnp.float32)


@register_loss("triplet", hyperparameters=_MARGIN, random=True)
def triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    margin: float = 0.3,
    normalize: bool = True,
) -> jax.Array:
    """Triplet loss with random sampling, eq. 1 of the paper.

    For every anchor ``a`` one positive ``p`` is drawn uniformly from the other
    images of its identity and one negative ``n`` uniformly from the images of
    all other identities (independent draws per anchor, from ``key``):

    ``L = mean_{valid a} ( d(a, p) - d(a, n) + margin )_+``  (euclidean ``d``).

    Args:
      embeddings: ``[N, D]``.
      labels: ``[N]`` integers, any order.
      key: a ``jax.random`` key.

    Returns:
      Scalar; 0.0 if no anchor has both a positive and a negative.
    """
    dist = pairwise_distance(_prepare(embeddings, normalize), metric=EUCLIDEAN)
    pos_mask, neg_mask = _pair_masks(labels)
    valid = jnp.any(pos_mask, axis=1) & jnp.any(neg_mask, axis=1)
    noise = _gumbel_noise(key, 2, dist.shape[0])
    d_ap = _rows(dist, _sample_index(noise[0], pos_mask))
    d_an = _rows(dist, _sample_index(noise[1], neg_mask))
    return _masked_mean(jax.nn.relu(d_ap - d_an + margin), valid)


def batch_all_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    margin: float = 0.3,
    normalize: bool = True,
) -> jax.Array:
    """Triplet hinge averaged over every valid triplet of the batch.

    ``L = (1 / |T|) sum_{(a, p, n) in T} ( d(a, p) - d(a, n) + margin )_+``

    where ``T = {(a, p, n): p != a, y_p = y_a, y_n != y_a}`` and ``d`` is
    euclidean. Zero (inactive) terms count in the mean. Memory is ``O(N^3)``.

    Args:
      embeddings: ``[N, D]``.
      labels: ``[N]`` integers, any order.

    Returns:
      Scalar; 0.0 if ``T`` is empty.
    """
    dist = pairwise_distance(_prepare(embeddings, normalize), metric=EUCLIDEAN)
    pos_mask, neg_mask = _pair_masks(labels)
    triplets = pos_mask[:, :, None] & neg_mask[:, None, :]
    hinge = jax.nn.relu(dist[:, :, None] - dist[:, None, :] + margin)
    return _masked_mean(hinge, triplets)


@register_loss("quadruplet", hyperparameters={"alpha": "margin", "beta": "beta", "normalize": "normalize"},
               random=True)
def quadruplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    alpha: float = 0.3,
    beta: float = 0.2,
    normalize: bool = True,
) -> jax.Array:
    """Quadruplet loss with random sampling, eq. 2 of the paper (Chen et al. 2017).

    For every anchor ``A`` (independent draws from ``key``): ``A'`` uniform
    among the other images of A's identity, ``B`` uniform among images of
    other identities, ``C`` uniform among images whose identity is neither
    A's nor B's. With euclidean ``d``:

    ``L = mean_{valid A} [ (d(A, A') - d(A, B) + alpha)_+ + (d(A, A') - d(C, B) + beta)_+ ]``

    Args:
      embeddings: ``[N, D]``.
      labels: ``[N]`` integers, any order.
      key: a ``jax.random`` key.
      alpha: margin of the anchor-based (triplet) term.
      beta: margin of the second term (negative pair not sharing the anchor).

    Returns:
      Scalar; anchors need a positive and a negative to be valid, 0.0 if none
      is. If no ``C`` exists for the drawn ``B`` (a batch with only two
      identities), that anchor's second term is 0.
    """
    labels = jnp.asarray(labels)
    dist = pairwise_distance(_prepare(embeddings, normalize), metric=EUCLIDEAN)
    pos_mask, neg_mask = _pair_masks(labels)
    valid = jnp.any(pos_mask, axis=1) & jnp.any(neg_mask, axis=1)
    noise = _gumbel_noise(key, 3, dist.shape[0])
    idx_p = _sample_index(noise[0], pos_mask)
    idx_b = _sample_index(noise[1], neg_mask)
    # C's candidate set depends on the drawn B, hence one [N, N] mask per anchor.
    c_mask = neg_mask & (labels[None, :] != labels[idx_b][:, None])
    has_c = jnp.any(c_mask, axis=1)
    idx_c = _sample_index(noise[2], c_mask)

    d_ap = _rows(dist, idx_p)
    d_ab = _rows(dist, idx_b)
    d_cb = dist[idx_c, idx_b]
    term1 = jax.nn.relu(d_ap - d_ab + alpha)
    term2 = jnp.where(has_c, jax.nn.relu(d_ap - d_cb + beta), 0.0)
    return _masked_mean(term1 + term2, valid)


@register_loss("trihard", hyperparameters=_HARD_MINING, soft_margin=True)
def trihard_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 0.3, normalize: bool = True,
                 soft_margin: bool = False) -> jax.Array:
    """Batch-hard triplet loss ("TriHard"), eq. 4 of the paper.

    ``L = mean_{valid a} ( max_{p != a, y_p = y_a} d(a, p) - min_{y_n != y_a} d(a, n) + margin )_+``

    with euclidean ``d``; ``soft_margin=True`` uses ``softplus(hardest_pos -
    hardest_neg)`` per anchor (no margin).

    Args:
      embeddings: ``[N, D]``.
      labels: ``[N]`` integers, any order.

    Returns:
      Scalar. Anchors without a positive or a negative are excluded from the
      mean; 0.0 if no anchor is valid.
    """
    dist = pairwise_distance(_prepare(embeddings, normalize), metric=EUCLIDEAN)
    hardest_pos, hardest_neg, valid = hardest_pairs(dist, labels)
    gap = hardest_pos - hardest_neg
    per_anchor = jax.nn.softplus(gap) if soft_margin else jax.nn.relu(gap + margin)
    return _masked_mean(per_anchor, valid)


@register_loss("msml", hyperparameters=_HARD_MINING, soft_margin=True)
def msml_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 0.3, normalize: bool = True,
              soft_margin: bool = False) -> jax.Array:
    """Margin Sample Mining Loss, eq. 5 of the paper: one hinge per batch.

    ``L = ( max_{i != j, y_i = y_j} d(i, j) - min_{y_i != y_k} d(i, k) + margin )_+``

    with euclidean ``d``: the hardest positive pair and the hardest negative
    pair of the whole batch (the two pairs need not share an image).
    ``soft_margin=True`` uses ``softplus(max_pos - min_neg)`` (no margin).

    Args:
      embeddings: ``[N, D]``.
      labels: ``[N]`` integers, any order.

    Returns:
      Scalar. 0.0 (with zero gradient) if the batch has no positive pair or no
      negative pair.
    """
    dist = pairwise_distance(_prepare(embeddings, normalize), metric=EUCLIDEAN)
    hardest_pos, hardest_neg, has_pos, has_neg = _hardest(dist, labels)
    max_pos, any_pos = _masked_max(hardest_pos, has_pos)
    min_neg, any_neg = _masked_min(hardest_neg, has_neg)
    gap = max_pos - min_neg
    loss = jax.nn.softplus(gap) if soft_margin else jax.nn.relu(gap + margin)
    return jnp.where(any_pos & any_neg, loss, 0.0)


def classification_loss(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
    """Mean softmax cross-entropy with label smoothing.

    ``L = -(1/N) sum_i sum_c q_ic log softmax(z_i)_c`` with
    ``q_i = (1 - eps) onehot(y_i) + eps / C``.

    Args:
      logits: ``[N, C]``.
      labels: ``[N]`` integer class ids in ``[0, C)``.
      label_smoothing: ``eps``.

    Returns:
      Scalar (at least float32).
    """
    logits = compute_dtype(logits)
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    targets = optax.smooth_labels(targets, label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))
