"""Tests for msml_jax.losses.

Every numerical expectation is computed independently here, with explicit
Python loops in float64 over pairs / triplets / quadruplets; the module's own
output is only compared with itself in the jit/vmap consistency tests.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msml_jax import losses as L
from msml_jax.distances import METRICS

# Float32 computation vs float64 loops, on distances of order 1.
ATOL = 2e-5
RTOL = 2e-5


# --------------------------------------------------------------------------
# Independent references (float64, explicit loops).
# --------------------------------------------------------------------------


def ref_normalize(x, normalize):
    x = np.asarray(x, np.float64)
    if not normalize:
        return x
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        norm = math.sqrt(sum(v * v for v in x[i]))
        out[i] = x[i] / max(norm, 1e-6)
    return out


def ref_pair_distance(u, v, metric):
    sq = sum((float(p) - float(q)) ** 2 for p, q in zip(u, v))
    if metric == "sqeuclidean":
        return sq
    if metric == "euclidean":
        return math.sqrt(sq)
    nu = math.sqrt(sum(float(p) ** 2 for p in u))
    nv = math.sqrt(sum(float(q) ** 2 for q in v))
    return 1.0 - sum(float(p) * float(q) for p, q in zip(u, v)) / (nu * nv)


def ref_distances(x, normalize):
    x = ref_normalize(x, normalize)
    n = x.shape[0]
    return [[ref_pair_distance(x[i], x[j], "euclidean") for j in range(n)] for i in range(n)]


def positives(labels, a):
    return [j for j in range(len(labels)) if j != a and labels[j] == labels[a]]


def negatives(labels, a):
    return [j for j in range(len(labels)) if labels[j] != labels[a]]


def softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def hinge(v):
    return max(v, 0.0)


def ref_msml(x, labels, margin, normalize, soft_margin):
    d = ref_distances(x, normalize)
    n = len(labels)
    pos = [d[i][j] for i in range(n) for j in range(n) if i != j and labels[i] == labels[j]]
    neg = [d[i][j] for i in range(n) for j in range(n) if labels[i] != labels[j]]
    if not pos or not neg:
        return 0.0
    gap = max(pos) - min(neg)
    return softplus(gap) if soft_margin else hinge(gap + margin)


def ref_trihard(x, labels, margin, normalize, soft_margin):
    d = ref_distances(x, normalize)
    terms = []
    for a in range(len(labels)):
        ps, ns = positives(labels, a), negatives(labels, a)
        if not ps or not ns:
            continue
        gap = max(d[a][p] for p in ps) - min(d[a][k] for k in ns)
        terms.append(softplus(gap) if soft_margin else hinge(gap + margin))
    return sum(terms) / len(terms) if terms else 0.0


def ref_batch_all(x, labels, margin, normalize):
    d = ref_distances(x, normalize)
    terms = [
        hinge(d[a][p] - d[a][k] + margin)
        for a in range(len(labels))
        for p in positives(labels, a)
        for k in negatives(labels, a)
    ]
    return sum(terms) / len(terms) if terms else 0.0


def ref_triplet_expectation(x, labels, margin, normalize):
    """E over the uniform draws of p and n, averaged over valid anchors."""
    d = ref_distances(x, normalize)
    per_anchor = []
    for a in range(len(labels)):
        ps, ns = positives(labels, a), negatives(labels, a)
        if not ps or not ns:
            continue
        total = sum(hinge(d[a][p] - d[a][k] + margin) for p in ps for k in ns)
        per_anchor.append(total / (len(ps) * len(ns)))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def ref_quadruplet_expectation(x, labels, alpha, beta, normalize):
    d = ref_distances(x, normalize)
    n = len(labels)
    per_anchor = []
    for a in range(n):
        ps, ns = positives(labels, a), negatives(labels, a)
        if not ps or not ns:
            continue
        total = 0.0
        for p in ps:
            for b in ns:
                cs = [c for c in range(n) if labels[c] != labels[a] and labels[c] != labels[b]]
                term2 = sum(hinge(d[a][p] - d[c][b] + beta) for c in cs) / len(cs) if cs else 0.0
                total += hinge(d[a][p] - d[a][b] + alpha) + term2
        per_anchor.append(total / (len(ps) * len(ns)))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def ref_classification(logits, labels, eps):
    logits = np.asarray(logits, np.float64)
    n, c = logits.shape
    total = 0.0
    for i in range(n):
        m = max(logits[i])
        lse = m + math.log(sum(math.exp(z - m) for z in logits[i]))
        for k in range(c):
            q = (1.0 - eps) * (1.0 if k == labels[i] else 0.0) + eps / c
            total -= q * (logits[i][k] - lse)
    return total / n


# --------------------------------------------------------------------------
# Batches: all N=12, D=5 so that compiled functions are shared across tests.
# Labels are deliberately shuffled, non-contiguous and not 0-based.
# --------------------------------------------------------------------------

N, D = 12, 5


def shuffled_batch(seed=0):
    """P=4 identities x K=3 images, in random order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat([3, 7, 11, 42], 3))
    return rng.normal(size=(N, D)).astype(np.float32), labels.astype(np.int32)


def uneven_batch(seed=1):
    """Identities with 5, 3, 3 and 1 images (one singleton), shuffled."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.array([5] * 5 + [1] * 3 + [9] * 3 + [2]))
    return rng.normal(size=(N, D)).astype(np.float32), labels.astype(np.int32)


BATCHES = {"shuffled": shuffled_batch, "uneven": uneven_batch}


def separated_batch(scale):
    """Four identities on orthogonal axes, images of one identity ~coincident."""
    rng = np.random.default_rng(7)
    labels = rng.permutation(np.repeat([2, 0, 5, 8], 3)).astype(np.int32)
    axis = {2: 0, 0: 1, 5: 2, 8: 3}
    x = np.stack([np.eye(D)[axis[int(y)]] for y in labels]) * scale
    x = x + 1e-3 * rng.normal(size=x.shape)
    return x.astype(np.float32), labels


def two_identity_batch():
    rng = np.random.default_rng(9)
    labels = rng.permutation(np.array([8] * 7 + [3] * 5)).astype(np.int32)
    return rng.normal(size=(N, D)).astype(np.float32), labels


# Compiling dominates the run time on CPU, so the tests share a few jitted
# functions that evaluate many settings at once (margins are traced).


@jax.jit
def deterministic_losses(x, labels, margin):
    """{(loss, normalize, soft_margin): value} for msml, trihard and batch_all."""
    out = {}
    for normalize in (True, False):
        for soft in (False, True):
            out["msml", normalize, soft] = L.msml_loss(x, labels, margin, normalize, soft)
            out["trihard", normalize, soft] = L.trihard_loss(x, labels, margin, normalize, soft)
        out["batch_all", normalize, False] = L.batch_all_triplet_loss(x, labels, margin, normalize)
    return out


@jax.jit
def random_losses(x, labels, key, margin):
    """{(loss, normalize): value} for triplet and quadruplet (beta = 0.2)."""
    return {
        (name, normalize): fn(x, labels, key, margin, normalize=normalize)
        for name, fn in [("triplet", L.triplet_loss), ("quadruplet", L.quadruplet_loss)]
        for normalize in (True, False)
    }


distances_j = jax.jit(L.pairwise_distance, static_argnames="metric")
hardest_j = jax.jit(lambda x, labels: L.hardest_pairs(L.pairwise_distance(x), labels))


# --------------------------------------------------------------------------
# pairwise_distance
# --------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_pairwise_distance_matches_loops(metric):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(N, D)).astype(np.float32)
    b = rng.normal(size=(7, D)).astype(np.float32)

    got = np.asarray(distances_j(a, b, metric=metric))
    ref = [[ref_pair_distance(a[i], b[j], metric) for j in range(7)] for i in range(N)]
    assert got.shape == (N, 7)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)

    got_self = np.asarray(distances_j(a, metric=metric))
    ref_self = [[ref_pair_distance(a[i], a[j], metric) for j in range(N)] for i in range(N)]
    np.testing.assert_allclose(got_self, ref_self, rtol=RTOL, atol=ATOL)
    # The diagonal is exactly zero, not the ~1e-7 left by the expansion.
    assert np.all(np.diag(got_self) == 0.0)


def test_pairwise_distance_gradient_finite_at_coincident_points():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 3)).astype(np.float32)
    a[3] = a[1]  # two identical rows -> an off-diagonal zero distance
    b = rng.normal(size=(4, 3)).astype(np.float32)
    b[2] = a[0]  # a row of b coincides with a row of a

    @jax.jit
    def grads(a, b):
        out = {}
        for metric in METRICS:
            out[metric] = jax.grad(
                lambda x, y: jnp.sum(L.pairwise_distance(x, metric=metric))
                + jnp.sum(L.pairwise_distance(x, y, metric=metric)),
                argnums=(0, 1),
            )(a, b)
            out[metric + "_value"] = L.pairwise_distance(a, metric=metric)
        return out

    out = grads(a, b)
    for metric in METRICS:
        for g in out[metric]:
            assert np.all(np.isfinite(g)), metric
        d = out[metric + "_value"]
        # Off the diagonal the expansion can leave rounding noise (sqrt of
        # ~1e-7 is ~3e-4), hence the loose bound for the coincident rows.
        assert abs(d[1, 3]) < 1e-3 and abs(d[3, 1]) < 1e-3, metric


def test_pairwise_distance_unknown_metric():
    with pytest.raises(ValueError, match="euclidean.*sqeuclidean.*cosine"):
        L.pairwise_distance(np.ones((2, 2), np.float32), metric="manhattan")


def test_pairwise_distance_bfloat16_computes_in_float32():
    rng = np.random.default_rng(2)
    a = jnp.asarray(rng.normal(size=(4, 3)), jnp.bfloat16)
    got = L.pairwise_distance(a)
    assert got.dtype == jnp.float32
    a64 = np.asarray(a.astype(jnp.float32), np.float64)  # the bf16-rounded values
    ref = [[ref_pair_distance(a64[i], a64[j], "euclidean") for j in range(4)] for i in range(4)]
    np.testing.assert_allclose(np.asarray(got), ref, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------
# hardest_pairs
# --------------------------------------------------------------------------


def test_hardest_pairs_matches_loops():
    x, labels = uneven_batch()
    hp, hn, valid = hardest_j(x, labels)
    d = ref_distances(x, normalize=False)
    for a in range(N):
        ps, ns = positives(labels, a), negatives(labels, a)
        ok = bool(ps) and bool(ns)
        assert bool(valid[a]) == ok
        if ok:
            np.testing.assert_allclose(hp[a], max(d[a][p] for p in ps), rtol=RTOL)
            np.testing.assert_allclose(hn[a], min(d[a][k] for k in ns), rtol=RTOL)
        else:
            assert hp[a] == 0.0 and hn[a] == 0.0
    assert not np.all(np.asarray(valid))  # the singleton is excluded


# --------------------------------------------------------------------------
# Deterministic losses vs brute force
# --------------------------------------------------------------------------


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("soft_margin", [False, True])
@pytest.mark.parametrize("margin", [0.3, 1.0])
def test_msml_and_trihard_match_brute_force(batch, normalize, soft_margin, margin):
    x, labels = BATCHES[batch]()
    got = deterministic_losses(x, labels, margin)
    assert got["msml", normalize, soft_margin].shape == ()
    np.testing.assert_allclose(
        got["msml", normalize, soft_margin],
        ref_msml(x, labels, margin, normalize, soft_margin),
        rtol=RTOL,
        atol=ATOL,
    )
    np.testing.assert_allclose(
        got["trihard", normalize, soft_margin],
        ref_trihard(x, labels, margin, normalize, soft_margin),
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("margin", [0.3, 1.0])
def test_batch_all_matches_brute_force(batch, normalize, margin):
    x, labels = BATCHES[batch]()
    np.testing.assert_allclose(
        deterministic_losses(x, labels, margin)["batch_all", normalize, False],
        ref_batch_all(x, labels, margin, normalize),
        rtol=RTOL,
        atol=ATOL,
    )


def test_msml_uses_negative_pair_between_singletons():
    # On a line: identity 4 at 0 and 3 (hardest positive pair, 3), singletons
    # 8 and 6 at 10 and 10.5, and four far-away pairs. The hardest negative
    # pair (0.5) joins the two singletons, neither of which is a valid anchor;
    # eq. 5 still uses it. Ignoring it would give max(3 - 7 + 0.3, 0) = 0.
    pos = [0.0, 3.0, 10.0, 10.5, 100, 101, 200, 201, 300, 301, 400, 401]
    labels = np.array([4, 4, 8, 6, 1, 1, 2, 2, 3, 3, 5, 5], np.int32)
    perm = np.random.default_rng(3).permutation(N)
    x = np.zeros((N, D), np.float32)
    x[:, 0] = np.array(pos)[perm]
    labels = labels[perm]
    ref = ref_msml(x, labels, 0.3, False, False)
    assert ref == pytest.approx(2.8)
    np.testing.assert_allclose(
        deterministic_losses(x, labels, 0.3)["msml", False, False], ref, rtol=RTOL
    )


@pytest.mark.parametrize("normalize,scale", [(True, 1.0), (False, 10.0)])
def test_inactive_hinge_gives_zero(normalize, scale):
    x, labels = separated_batch(scale)
    margin = 0.3
    d = ref_distances(x, normalize)
    # Without the hinge every one of these losses would be clearly negative.
    max_pos = max(d[i][j] for i in range(N) for j in positives(labels, i))
    min_neg = min(d[i][j] for i in range(N) for j in negatives(labels, i))
    assert max_pos - min_neg + margin < -0.5
    det = deterministic_losses(x, labels, margin)
    rand = random_losses(x, labels, jax.random.key(0), margin)
    values = [det[name, normalize, False] for name in ("msml", "trihard", "batch_all")]
    values += [rand[name, normalize] for name in ("triplet", "quadruplet")]
    assert [float(v) for v in values] == [0.0] * 5
    assert ref_msml(x, labels, margin, normalize, False) == 0.0
    # Soft margin has no hinge: still positive.
    assert float(det["msml", normalize, True]) > 0.0


def test_bfloat16_embeddings():
    x, labels = shuffled_batch()
    xb = jnp.asarray(x, jnp.bfloat16)
    x_rounded = np.asarray(xb.astype(jnp.float32))
    got = deterministic_losses(xb, labels, 0.3)
    for key, ref in [
        (("msml", True, False), ref_msml(x_rounded, labels, 0.3, True, False)),
        (("trihard", False, False), ref_trihard(x_rounded, labels, 0.3, False, False)),
        (("batch_all", True, False), ref_batch_all(x_rounded, labels, 0.3, True)),
    ]:
        assert got[key].dtype == jnp.float32
        np.testing.assert_allclose(got[key], ref, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------
# Gradients vs central finite differences in float64
# --------------------------------------------------------------------------


def enable_x64():
    """Context manager enabling float64 locally (jax.enable_x64 in newer JAX)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as legacy_enable_x64

    return legacy_enable_x64()


def check_grad_fd(f, x, eps=1e-6):
    """Jacobian of f at x vs central differences on every coordinate, in float64.

    f maps x to a dict of scalar losses. A single compiled function returns the
    values and the reverse-mode Jacobian; the finite differences re-use it at
    the shifted points (compiling is the expensive part on CPU, not running).
    """
    with enable_x64():
        x = np.asarray(x, np.float64)
        value_and_jac = jax.jit(lambda e: (f(e), jax.jacrev(f)(e)))
        values, jac = value_and_jac(x)
        steps = (np.eye(x.size) * eps).reshape((x.size,) + x.shape)
        plus = [value_and_jac(x + step)[0] for step in steps]
        minus = [value_and_jac(x - step)[0] for step in steps]
    for name in values:
        assert values[name].dtype == np.float64, name
        g = np.asarray(jac[name]).ravel()
        fd = [(float(p[name]) - float(m[name])) / (2 * eps) for p, m in zip(plus, minus)]
        # Truncation error ~eps^2, round-off ~1e-16/eps = 1e-10.
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8, err_msg=name)
        assert np.abs(g).max() > 1e-3, name  # the check is not vacuous


def test_metric_loss_gradients_match_finite_differences():
    # Random data: no ties in the max/min and no hinge within eps of its kink.
    x, labels = uneven_batch(seed=3)
    key = jax.random.key(5)

    def f(e):
        return {
            "msml": L.msml_loss(e, labels, margin=1.0),
            "trihard": L.trihard_loss(e, labels, margin=1.0, normalize=False),
            "batch_all": L.batch_all_triplet_loss(e, labels),
            "triplet": L.triplet_loss(e, labels, key, margin=0.5),
            "quadruplet": L.quadruplet_loss(e, labels, key, alpha=0.5, beta=0.5),
        }

    check_grad_fd(f, x)


def test_classification_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 6))
    labels = rng.integers(0, 6, size=5).astype(np.int32)
    check_grad_fd(
        lambda z: {
            "smoothed": L.classification_loss(z, labels, label_smoothing=0.1),
            "plain": L.classification_loss(z, labels),
        },
        logits,
    )


# --------------------------------------------------------------------------
# Random losses: Monte Carlo mean vs exact expectation
# --------------------------------------------------------------------------

NUM_KEYS = 20_000
mc_triplet = jax.jit(jax.vmap(L.triplet_loss, in_axes=(None, None, 0, None)))
mc_quadruplet = jax.jit(jax.vmap(L.quadruplet_loss, in_axes=(None, None, 0, None, None)))


@pytest.fixture(scope="module")
def mc_keys():
    # Fixed keys: the test is deterministic.
    return jax.random.split(jax.random.key(2024), NUM_KEYS)


def mean_and_standard_error(values):
    values = np.asarray(values, np.float64)
    assert values.shape == (NUM_KEYS,)
    # The per-key losses are i.i.d., so this is the standard error of their mean.
    return values.mean(), values.std(ddof=1) / math.sqrt(NUM_KEYS)


# A correct sampler lands within 5 standard errors of the exact expectation
# except with probability ~6e-7 (CLT); the extra 1e-5 covers float32 round-off
# of the losses. A biased sampler (e.g. one that can pick the anchor as its
# own positive, or draws C from B's identity) moves the mean by far more than
# 5 * se (a few 1e-3 here).


@pytest.mark.parametrize("batch", sorted(BATCHES))
def test_triplet_loss_mean_matches_expectation(batch, mc_keys):
    x, labels = BATCHES[batch]()
    margin = 0.3
    mean, se = mean_and_standard_error(mc_triplet(x, labels, mc_keys, margin))
    expected = ref_triplet_expectation(x, labels, margin, True)
    assert se > 0
    assert abs(mean - expected) < 5 * se + 1e-5, (mean, expected, se)


@pytest.mark.parametrize("batch", ["uneven", "two_identities"])
def test_quadruplet_loss_mean_matches_expectation(batch, mc_keys):
    # With two identities no C exists for any B: the second term is 0.
    x, labels = two_identity_batch() if batch == "two_identities" else BATCHES[batch]()
    alpha, beta = 0.3, 0.2
    mean, se = mean_and_standard_error(mc_quadruplet(x, labels, mc_keys, alpha, beta))
    expected = ref_quadruplet_expectation(x, labels, alpha, beta, True)
    assert se > 0
    assert abs(mean - expected) < 5 * se + 1e-5, (mean, expected, se)


# --------------------------------------------------------------------------
# jit and vmap
# --------------------------------------------------------------------------


def test_losses_jit_and_vmap():
    batches = [shuffled_batch(seed=s) for s in range(3)]
    xs = np.stack([b[0] for b in batches])
    ys = np.stack([b[1] for b in batches])
    key = jax.random.key(3)

    def losses(x, labels):
        return {
            "msml": L.msml_loss(x, labels),
            "trihard": L.trihard_loss(x, labels, soft_margin=True),
            "batch_all": L.batch_all_triplet_loss(x, labels),
            "triplet": L.triplet_loss(x, labels, key),
            "quadruplet": L.quadruplet_loss(x, labels, key),
        }

    @jax.jit
    def batched(xs, ys):
        # vmap over embeddings with shared labels, and over embeddings and
        # labels together (each batch with its own label order).
        return jax.vmap(losses, (0, None))(xs, ys[0]), jax.vmap(losses)(xs, ys)

    for got, label_sets in zip(batched(xs, ys), ([ys[0]] * 3, ys)):
        # Per-batch results from the separately jitted single-batch functions.
        for i, labels in enumerate(label_sets):
            det = deterministic_losses(xs[i], labels, 0.3)
            rand = random_losses(xs[i], labels, key, 0.3)
            for name, expected in [
                ("msml", det["msml", True, False]),
                ("trihard", det["trihard", True, True]),
                ("batch_all", det["batch_all", True, False]),
                ("triplet", rand["triplet", True]),
                ("quadruplet", rand["quadruplet", True]),
            ]:
                np.testing.assert_allclose(got[name][i], expected, rtol=1e-6, atol=1e-7)
            # ... and right, not merely consistent.
            np.testing.assert_allclose(
                got["msml"][i], ref_msml(xs[i], labels, 0.3, True, False), rtol=RTOL, atol=ATOL
            )


# --------------------------------------------------------------------------
# classification_loss
# --------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_classification_loss_matches_numpy(eps):
    rng = np.random.default_rng(12)
    logits = (3 * rng.normal(size=(7, 5))).astype(np.float32)
    labels = rng.integers(0, 5, size=7).astype(np.int32)
    got = L.classification_loss(logits, labels, label_smoothing=eps)
    assert got.shape == ()
    np.testing.assert_allclose(got, ref_classification(logits, labels, eps), rtol=1e-5)
    got_bf16 = L.classification_loss(jnp.asarray(logits, jnp.bfloat16), labels, eps)
    assert got_bf16.dtype == jnp.float32


# --------------------------------------------------------------------------
# Degenerate inputs
# --------------------------------------------------------------------------


@jax.jit
def mining_values_and_grads(x, labels):
    fns = {
        "msml": lambda e: L.msml_loss(e, labels),
        "msml_soft": lambda e: L.msml_loss(e, labels, soft_margin=True),
        "trihard": lambda e: L.trihard_loss(e, labels),
        "trihard_soft": lambda e: L.trihard_loss(e, labels, soft_margin=True),
    }
    return {name: jax.value_and_grad(fn)(x) for name, fn in fns.items()}


@pytest.mark.parametrize(
    "labels", [[6] * N, list(range(40, 40 - N, -1))], ids=["one_identity", "all_distinct"]
)
def test_degenerate_batches_give_zero_and_finite_gradients(labels):
    labels = np.array(labels, np.int32)
    x = np.random.default_rng(13).normal(size=(N, D)).astype(np.float32)
    for name, (value, grad) in mining_values_and_grads(x, labels).items():
        assert float(value) == 0.0, name
        assert np.all(np.asarray(grad) == 0.0), name  # in particular finite
    det = deterministic_losses(x, labels, 0.3)
    rand = random_losses(x, labels, jax.random.key(1), 0.3)
    for name, value in {**det, **rand}.items():
        assert float(value) == 0.0, name
    hp, hn, valid = hardest_j(x, labels)
    assert not np.any(valid) and np.all(hp == 0.0) and np.all(hn == 0.0)


def test_zero_embedding_is_finite_with_normalization():
    x, labels = uneven_batch()
    x[0] = 0.0
    for name, (value, grad) in mining_values_and_grads(x, labels).items():
        assert np.isfinite(value) and np.all(np.isfinite(grad)), name
    for name, value in deterministic_losses(x, labels, 0.3).items():
        assert np.isfinite(value), name


def test_comparable_normalizes_for_euclidean_only():
    from msml_jax.distances import comparable

    q, g = np.array([[3.0, 4.0]], np.float32), np.array([[0.0, 2.0]], np.float32)
    nq, ng = comparable(q, g, "euclidean", True)
    np.testing.assert_allclose(np.asarray(nq), [[0.6, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ng), [[0.0, 1.0]], rtol=1e-6)
    for metric, normalize in (("euclidean", False), ("sqeuclidean", True), ("cosine", True)):
        assert comparable(q, g, metric, normalize) == (q, g)
    nq, _ = comparable(q.astype(np.float64), g, "euclidean", True, numpy=True)
    assert nq.dtype == np.float64
    with pytest.raises(ValueError, match="unknown metric"):
        comparable(q, g, "manhattan", True)
