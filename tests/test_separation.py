"""Separation figures against a brute-force double loop over every (query, gallery) pair."""

import math

import numpy as np
import pytest

from msml_jax.evaluation.separation import pair_distances, separation_figures, separation_from_distances


def _percentile(values, p):
    """Linear-interpolation percentile written out (numpy's default method)."""
    v = sorted(values)
    pos = (len(v) - 1) * p / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _brute_force(q, g, q_pids, g_pids, q_cams, g_cams, dist):
    pos, neg = [], []
    for i in range(len(q)):
        if q_pids[i] < 0:
            continue
        for j in range(len(g)):
            d = dist(q[i], g[j])
            if q_pids[i] == g_pids[j]:
                if q_cams[i] != g_cams[j]:
                    pos.append(d)
            else:
                neg.append(d)
    wins = 0.0
    for p in pos:
        for n in neg:
            wins += 1.0 if n > p else 0.5 if n == p else 0.0
    median_pos = _percentile(pos, 50)
    return pos, neg, {
        "auc": wins / (len(pos) * len(neg)),
        "neg_closer_than_median_pos": sum(n < median_pos for n in neg) / len(neg),
        "gap_p95_p5": _percentile(neg, 5) - _percentile(pos, 95),
    }


def _euclidean(a, b):
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))


def _cosine(a, b):
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    na, nb = math.sqrt(sum(float(x) ** 2 for x in a)), math.sqrt(sum(float(y) ** 2 for y in b))
    return min(max(1.0 - dot / (na * nb), 0.0), 2.0)


def _small_case():
    rng = np.random.default_rng(0)
    # Small integer embeddings: many exactly equal distances (ties), no zero vectors (cosine).
    q = rng.integers(0, 2, size=(9, 3)).astype(np.float32) + np.array([1, 0, 0], np.float32)
    g = rng.integers(0, 2, size=(14, 3)).astype(np.float32) + np.array([1, 0, 0], np.float32)
    q_pids = np.array([1, 1, 2, 3, 3, -1, 4, 5, 2])
    g_pids = np.array([1, 1, 1, 2, 2, 3, 3, 3, -1, -1, 0, 4, 6, 5])
    q_cams = np.array([0, 1, 0, 1, 2, 0, 0, 1, 2])
    g_cams = np.array([0, 1, 2, 0, 2, 1, 2, 0, 0, 1, 1, 0, 1, 1])
    return q, g, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("metric, dist", [("euclidean", _euclidean), ("cosine", _cosine)])
def test_exact_matches_brute_force_with_ties(metric, dist):
    q, g, q_pids, g_pids, q_cams, g_cams = _small_case()
    pos, neg, want = _brute_force(q, g, q_pids, g_pids, q_cams, g_cams, dist)
    assert len(set(neg)) < len(neg)  # the case does have ties
    got = separation_figures(q, g, q_pids, g_pids, q_cams, g_cams, metric=metric)
    assert got["sampled"] is False
    assert got["num_pos_pairs"] == len(pos) and got["num_neg_pairs"] == len(neg)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    got_pos, got_neg, _ = pair_distances(q, g, q_pids, g_pids, q_cams, g_cams, metric=metric)
    np.testing.assert_allclose(np.sort(got_pos), np.sort(pos), atol=1e-12)
    np.testing.assert_allclose(np.sort(got_neg), np.sort(neg), atol=1e-12)


def test_auc_hand_worked():
    # pos {1, 2}, neg {2, 3}: pairs (1,2) win, (1,3) win, (2,2) tie, (2,3) win -> 3.5 / 4.
    assert separation_from_distances([1.0, 2.0], [2.0, 3.0])["auc"] == 0.875
    assert separation_from_distances([5.0], [1.0, 2.0])["auc"] == 0.0


def _clustered_case(seed, num_q=60, num_g=200, num_ids=20):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, 8))
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    g_pids[:10] = -1  # distractors
    q = centres[q_pids] + rng.normal(scale=1.0, size=(num_q, 8))
    g = centres[np.maximum(g_pids, 0)] + rng.normal(scale=1.0, size=(num_g, 8))
    return q, g, q_pids, g_pids, rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)


def test_sampled_close_to_brute_force():
    q, g, q_pids, g_pids, q_cams, g_cams = _clustered_case(1)
    pos, neg, want = _brute_force(q, g, q_pids, g_pids, q_cams, g_cams, _euclidean)
    budget = 3000  # of ~12000 pairs: every positive kept, negatives sampled
    got = separation_figures(q, g, q_pids, g_pids, q_cams, g_cams, max_pairs=budget, seed=3)
    assert got["sampled"] is True
    assert got["num_pos_pairs"] == len(pos) and got["num_neg_pairs"] == len(neg)
    # Spread over 30 seeds (410 positives, 2590 of 11455 negatives sampled): AUC 0.006, the fraction 0.008,
    # the gap 0.054 (distances ~4); tolerances are 4.5 to 5 of them.
    assert got["auc"] == pytest.approx(want["auc"], abs=0.03)
    assert got["neg_closer_than_median_pos"] == pytest.approx(want["neg_closer_than_median_pos"], abs=0.04)
    assert got["gap_p95_p5"] == pytest.approx(want["gap_p95_p5"], abs=0.25)
    # Sampled pairs really are positives / negatives: continuous distances identify them.
    s_pos, s_neg, _ = pair_distances(q, g, q_pids, g_pids, q_cams, g_cams, max_pairs=budget, seed=3)
    assert len(s_pos) == len(pos) and len(s_pos) + len(s_neg) == budget
    assert np.isin(np.round(s_neg, 9), np.round(neg, 9)).all()
    # Same seed, same figures.
    again = separation_figures(q, g, q_pids, g_pids, q_cams, g_cams, max_pairs=budget, seed=3)
    assert again == got


def test_sampled_positives_when_they_exceed_half_the_budget():
    q, g, q_pids, g_pids, q_cams, g_cams = _clustered_case(2, num_ids=3)
    pos, neg, _ = _brute_force(q, g, q_pids, g_pids, q_cams, g_cams, _euclidean)
    s_pos, s_neg, info = pair_distances(q, g, q_pids, g_pids, q_cams, g_cams, max_pairs=400, seed=0)
    assert info["sampled"] and len(pos) > 200
    assert len(s_pos) == 200 and len(s_neg) == 200
    assert np.isin(np.round(s_pos, 9), np.round(pos, 9)).all()
    assert np.isin(np.round(s_neg, 9), np.round(neg, 9)).all()


def test_bad_inputs():
    q, g, q_pids, g_pids, q_cams, g_cams = _small_case()
    with pytest.raises(ValueError, match="g_pids"):
        separation_figures(q, g, q_pids, g_pids[:-1], q_cams, g_cams)
    with pytest.raises(ValueError, match="unknown metric"):
        separation_figures(q, g, q_pids, g_pids, q_cams, g_cams, metric="manhattan")
    with pytest.raises(ValueError, match="positive and negative"):
        separation_from_distances([], [1.0])
