"""Tests for msml_jax.evaluation.evaluate_ranking.

The vectorized evaluator is compared against a deliberately straightforward
per-query reference written here (stable argsort per query, junk removal,
metrics by definition, and the official Market-1501 ``compute_AP.m`` loop
transcribed literally).
"""

import numpy as np
import pytest

from msml_jax.evaluation import evaluate_ranking
from msml_jax.evaluation import ranking as ranking_mod


# --------------------------------------------------------------------------
# Independent reference implementation (one query at a time).
# --------------------------------------------------------------------------
def _official_ap(matches):
    """Literal transcription of Market-1501 compute_AP.m on a junk-free list."""
    ngood = int(matches.sum())
    old_recall, old_precision, ap, intersect, j = 0.0, 1.0, 0.0, 0, 0
    good_now = 0
    for is_good in matches:
        if is_good:
            intersect += 1
            good_now += 1
        recall = intersect / ngood
        precision = intersect / (j + 1)
        ap += (recall - old_recall) * ((old_precision + precision) / 2)
        old_recall, old_precision = recall, precision
        j += 1
        if good_now == ngood:
            break
    return ap


def reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                   ap_mode="mean_precision"):
    distmat = np.asarray(distmat)
    cmcs, aps, inps = [], [], []
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        junk = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        keep = order[~junk]
        matches = (g_pids[keep] == q_pids[q]).astype(np.int64)
        if not matches.any():
            continue
        cmc = np.cumsum(matches)
        cmc[cmc > 1] = 1
        cmc_row = np.ones(max_rank)
        n = min(max_rank, len(cmc))
        cmc_row[:n] = cmc[:n]
        cmcs.append(cmc_row)
        hit_pos = np.flatnonzero(matches) + 1  # 1-based ranks of hits
        m = len(hit_pos)
        if ap_mode == "mean_precision":
            aps.append(np.mean(np.arange(1, m + 1) / hit_pos))
        else:
            aps.append(_official_ap(matches))
        inps.append(m / hit_pos[-1])
    return {
        "cmc": np.mean(cmcs, axis=0),
        "mAP": float(np.mean(aps)),
        "mINP": float(np.mean(inps)),
        "num_valid_queries": len(cmcs),
    }


def assert_same(got, want):
    assert got["num_valid_queries"] == want["num_valid_queries"]
    assert got["cmc"].shape == want["cmc"].shape
    np.testing.assert_allclose(got["cmc"], want["cmc"], rtol=0, atol=1e-12)
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-12)
    assert got["mINP"] == pytest.approx(want["mINP"], abs=1e-12)


def make_problem(rng, num_q=40, num_g=300, num_ids=25, num_cams=6, num_distractors=60,
                 integer_dist=False, dtype=np.float32):
    q_pids = rng.integers(1, num_ids + 1, size=num_q)
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, size=num_g - num_distractors),
                             np.zeros(num_distractors, np.int64)])  # pid 0: distractors
    rng.shuffle(g_pids)
    q_camids = rng.integers(0, num_cams, size=num_q)
    g_camids = rng.integers(0, num_cams, size=num_g)
    same = q_pids[:, None] == g_pids[None, :]
    if integer_dist:
        dist = rng.integers(0, 6, size=(num_q, num_g)) + 2 * (~same)
    else:
        dist = rng.random((num_q, num_g)) + 0.5 * (~same)
    return dist.astype(dtype), q_pids, g_pids, q_camids, g_camids


# --------------------------------------------------------------------------
# Comparisons against the reference.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("ap_mode", ["mean_precision", "official"])
@pytest.mark.parametrize("seed", range(4))
def test_random_matches_reference(seed, ap_mode):
    rng = np.random.default_rng(seed)
    args = make_problem(rng)
    got = evaluate_ranking(*args, max_rank=20, ap_mode=ap_mode)
    assert_same(got, reference_eval(*args, max_rank=20, ap_mode=ap_mode))


@pytest.mark.parametrize("ap_mode", ["mean_precision", "official"])
@pytest.mark.parametrize("seed", range(3))
def test_integer_ties_match_reference(seed, ap_mode):
    rng = np.random.default_rng(100 + seed)
    for dtype in (np.float32, np.float64, np.int32):
        args = make_problem(rng, integer_dist=True, dtype=dtype)
        got = evaluate_ranking(*args, max_rank=15, ap_mode=ap_mode)
        assert_same(got, reference_eval(*args, max_rank=15, ap_mode=ap_mode))


def test_all_equal_distances():
    # Every entry tied: the ranking is purely by gallery index.
    rng = np.random.default_rng(7)
    _, q_pids, g_pids, q_camids, g_camids = make_problem(rng, num_q=12, num_g=80)
    dist = np.zeros((12, 80), np.float32)
    for mode in ("mean_precision", "official"):
        assert_same(evaluate_ranking(dist, q_pids, g_pids, q_camids, g_camids, 10, mode),
                    reference_eval(dist, q_pids, g_pids, q_camids, g_camids, 10, mode))


def test_infinite_distances_and_ties_with_padding():
    # +inf entries (including at matches) exercise the compaction padding.
    rng = np.random.default_rng(11)
    dist, q_pids, g_pids, q_camids, g_camids = make_problem(rng, num_q=30, num_g=200)
    dist[rng.random(dist.shape) < 0.2] = np.inf
    dist[rng.random(dist.shape) < 0.05] = -np.inf
    for mode in ("mean_precision", "official"):
        assert_same(evaluate_ranking(dist, q_pids, g_pids, q_camids, g_camids, 10, mode),
                    reference_eval(dist, q_pids, g_pids, q_camids, g_camids, 10, mode))


def _variants(rng):
    """Problems covering the dtype code paths, ties, signed zeros and infinities."""
    for dtype in (np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8):
        for integer_dist in (False, True):
            if np.dtype(dtype).kind in "iu" and not integer_dist:
                continue
            yield make_problem(rng, num_q=50, num_g=250, integer_dist=integer_dist, dtype=dtype)
    dist, *rest = make_problem(rng, num_q=50, num_g=250, integer_dist=True)
    dist = dist - 2  # integer values in [-2, 5]
    zero = dist == 0
    dist[zero & (rng.random(dist.shape) < 0.5)] = -0.0  # -0.0 must tie with 0.0
    dist[rng.random(dist.shape) < 0.1] = np.inf
    dist[rng.random(dist.shape) < 0.05] = -np.inf
    yield (dist, *rest)


@pytest.mark.parametrize("full_sort_fraction", [0.0, 2.0])
@pytest.mark.parametrize("threads", [1, 3])
def test_both_block_strategies_and_threading(monkeypatch, full_sort_fraction, threads):
    # Force whole-row sorting (0.0) or compaction (2.0) in every block, with
    # small blocks so that several blocks/threads are used.
    monkeypatch.setattr(ranking_mod, "_FULL_SORT_FRACTION", full_sort_fraction)
    monkeypatch.setattr(ranking_mod, "_BLOCK_ROWS", 7)
    monkeypatch.setattr(ranking_mod, "_TIE_CHUNK_ELEMENTS", 500)
    rng = np.random.default_rng(21)
    for args in _variants(rng):
        for mode in ("mean_precision", "official"):
            got = evaluate_ranking(*args, max_rank=30, ap_mode=mode, num_threads=threads)
            assert_same(got, reference_eval(*args, max_rank=30, ap_mode=mode))


@pytest.mark.parametrize("full_sort_fraction", [0.0, 2.0])
def test_nan_rejected_in_both_strategies(monkeypatch, full_sort_fraction):
    monkeypatch.setattr(ranking_mod, "_FULL_SORT_FRACTION", full_sort_fraction)
    monkeypatch.setattr(ranking_mod, "_BLOCK_ROWS", 4)
    rng = np.random.default_rng(2)
    dist, q_pids, g_pids, q_camids, g_camids = make_problem(rng, num_q=20, num_g=100)
    q_pids[5] = 12345  # a query without valid match: its row is checked too
    for row in (0, 5, 19):
        d = dist.copy()
        d[row, 37] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            evaluate_ranking(d, q_pids, g_pids, q_camids, g_camids)


def test_queries_without_valid_match_are_skipped():
    rng = np.random.default_rng(3)
    dist, q_pids, g_pids, q_camids, g_camids = make_problem(rng, num_q=30, num_g=200)
    # Query 0: pid absent from the gallery.  Query 1: all its gallery
    # entries share its camera, so they are all junk.
    q_pids[0] = 999
    q_pids[1] = 998
    g_pids[:3] = 998
    g_camids[:3] = 4
    q_camids[1] = 4
    ref = reference_eval(dist, q_pids, g_pids, q_camids, g_camids, 10)
    got = evaluate_ranking(dist, q_pids, g_pids, q_camids, g_camids, 10)
    assert_same(got, ref)
    n_skipped = 30 - got["num_valid_queries"]
    assert n_skipped >= 2


def test_max_rank_larger_than_gallery():
    rng = np.random.default_rng(5)
    args = make_problem(rng, num_q=10, num_g=25, num_ids=4, num_distractors=5)
    got = evaluate_ranking(*args, max_rank=60)
    assert got["cmc"].shape == (60,)
    assert_same(got, reference_eval(*args, max_rank=60))
    assert got["cmc"][-1] == 1.0


def test_hand_worked_example():
    # One camera per query differs from the matches so that junk is exercised.
    #
    # Query A: pid 1, cam 0.  Query B: pid 2, cam 1.  Query C: pid 3 (no
    # gallery entry with pid 3 -> skipped).
    # Gallery (index: pid, cam):  0:(1,0) 1:(1,1) 2:(2,0) 3:(0,2) 4:(1,2) 5:(2,1)
    #
    # Query A distances  [0.1, 0.5, 0.2, 0.3, 0.9, 0.4]
    #   stable order: g0 g2 g3 g5 g1 g4; g0 is junk (pid 1, cam 0) -> removed.
    #   ranking: g2(x) g3(x) g5(x) g1(HIT) g4(HIT) -> hits at ranks 4, 5.
    #   AP (mean precision) = (1/4 + 2/5)/2 = 0.325;  INP = 2/5 = 0.4.
    #   official: hit1: p_before=0/3=0, p_at=1/4 -> 1/2*(0+0.25)/2 = 0.0625
    #             hit2: p_before=1/4,  p_at=2/5 -> 1/2*(0.25+0.4)/2 = 0.1625
    #             AP = 0.225.
    # Query B distances  [0.3, 0.3, 0.3, 0.0, 0.7, 0.3]
    #   g5 is junk (pid 2, cam 1).  Ties at 0.3 ordered by index:
    #   ranking: g3(x) g0(x) g1(x) g2(HIT) g4(x) -> single hit at rank 4.
    #   AP = 1/4;  INP = 1/4.  official: 1*(0/3 + 1/4)/2 = 0.125.
    # Query C: skipped.
    # CMC over the 2 valid queries: both first hits at rank 4
    #   -> [0, 0, 0, 1, 1, ...].
    # mAP = (0.325 + 0.25)/2 = 0.2875;  mINP = (0.4 + 0.25)/2 = 0.325.
    # official mAP = (0.225 + 0.125)/2 = 0.175.
    dist = np.array([[0.1, 0.5, 0.2, 0.3, 0.9, 0.4],
                     [0.3, 0.3, 0.3, 0.0, 0.7, 0.3],
                     [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], np.float32)
    q_pids, q_camids = np.array([1, 2, 3]), np.array([0, 1, 0])
    g_pids, g_camids = np.array([1, 1, 2, 0, 1, 2]), np.array([0, 1, 0, 2, 2, 1])
    got = evaluate_ranking(dist, q_pids, g_pids, q_camids, g_camids, max_rank=6)
    assert got["num_valid_queries"] == 2
    np.testing.assert_allclose(got["cmc"], [0, 0, 0, 1, 1, 1])
    assert got["mAP"] == pytest.approx(0.2875)
    assert got["mINP"] == pytest.approx(0.325)
    off = evaluate_ranking(dist, q_pids, g_pids, q_camids, g_camids, max_rank=6,
                           ap_mode="official")
    assert off["mAP"] == pytest.approx(0.175)
    assert off["mINP"] == pytest.approx(0.325)
    np.testing.assert_allclose(off["cmc"], got["cmc"])
    # and the reference agrees with the hand computation
    assert_same(got, reference_eval(dist, q_pids, g_pids, q_camids, g_camids, 6))
    assert_same(off, reference_eval(dist, q_pids, g_pids, q_camids, g_camids, 6, "official"))


def test_perfect_ranking():
    # Matches (different cameras) strictly closer than everything else.
    q_pids, q_camids = np.array([1, 2]), np.array([0, 0])
    g_pids, g_camids = np.array([2, 1, 0, 1, 2]), np.array([1, 1, 1, 2, 3])
    dist = np.where(q_pids[:, None] == g_pids[None, :], 0.1, 1.0)
    for mode in ("mean_precision", "official"):
        out = evaluate_ranking(dist, q_pids, g_pids, q_camids, g_camids, 3, mode)
        assert out["mAP"] == pytest.approx(1.0)
        assert out["mINP"] == pytest.approx(1.0)
        np.testing.assert_allclose(out["cmc"], [1, 1, 1])


def test_does_not_modify_inputs():
    rng = np.random.default_rng(9)
    args = make_problem(rng)
    copies = [a.copy() for a in args]
    evaluate_ranking(*args)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------
# Input validation.
# --------------------------------------------------------------------------
def _tiny():
    rng = np.random.default_rng(0)
    return make_problem(rng, num_q=5, num_g=20, num_ids=3, num_distractors=2)


def test_wrong_distmat_shape():
    dist, q_pids, g_pids, q_camids, g_camids = _tiny()
    with pytest.raises(ValueError, match="distmat"):
        evaluate_ranking(dist.T, q_pids, g_pids, q_camids, g_camids)
    with pytest.raises(ValueError, match="distmat"):
        evaluate_ranking(dist[0], q_pids, g_pids, q_camids, g_camids)


def test_wrong_camid_lengths():
    dist, q_pids, g_pids, q_camids, g_camids = _tiny()
    with pytest.raises(ValueError, match="q_camids"):
        evaluate_ranking(dist, q_pids, g_pids, q_camids[:-1], g_camids)
    with pytest.raises(ValueError, match="g_camids"):
        evaluate_ranking(dist, q_pids, g_pids, q_camids, g_camids[:-1])
    with pytest.raises(ValueError, match="q_pids"):
        evaluate_ranking(dist, q_pids[:, None], g_pids, q_camids, g_camids)


def test_nan_rejected():
    dist, q_pids, g_pids, q_camids, g_camids = _tiny()
    # NaN at a non-matching entry and at a matching entry
    for pos in [(2, 7), None]:
        d = dist.copy()
        if pos is None:
            qi, gi = np.argwhere(q_pids[:, None] == g_pids[None, :])[0]
            pos = (qi, gi)
        d[pos] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            evaluate_ranking(d, q_pids, g_pids, q_camids, g_camids)


def test_bad_ap_mode_and_max_rank():
    args = _tiny()
    with pytest.raises(ValueError, match="mean_precision.*official"):
        evaluate_ranking(*args, ap_mode="trapezoid")
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_ranking(*args, max_rank=0)


def test_no_valid_query_raises():
    dist, q_pids, g_pids, q_camids, g_camids = _tiny()
    with pytest.raises(ValueError, match="no valid query"):
        evaluate_ranking(dist, q_pids + 100, g_pids, q_camids, g_camids)
    # all matches junk (same camera everywhere)
    with pytest.raises(ValueError, match="no valid query"):
        evaluate_ranking(dist, q_pids, g_pids, np.zeros_like(q_camids), np.zeros_like(g_camids))


@pytest.mark.parametrize("normalize", [True, False])
def test_image_ranking_by_euclidean_distance_of_the_embeddings(normalize):
    from msml_jax.evaluation.protocols import rank_images

    rng = np.random.default_rng(11)
    centres = rng.normal(size=(8, 6))
    q_pids, g_pids = rng.integers(0, 8, 30), rng.integers(0, 8, 120)
    q_camids, g_camids = rng.integers(0, 3, 30), rng.integers(0, 3, 120)
    # Noisy identity centres, each scaled by its own factor: normalising changes the ranking.
    query = (centres[q_pids] + rng.normal(0, 0.8, (30, 6))) * rng.uniform(0.2, 5, (30, 1))
    gallery = (centres[g_pids] + rng.normal(0, 0.8, (120, 6))) * rng.uniform(0.2, 5, (120, 1))
    got = rank_images({"embeddings": query.astype(np.float32), "pids": q_pids, "camids": q_camids},
                      {"embeddings": gallery.astype(np.float32), "pids": g_pids, "camids": g_camids},
                      normalize=normalize)

    def reference(unit):
        q, g = query, gallery
        if unit:
            q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
        return reference_eval(np.linalg.norm(q[:, None, :] - g[None, :, :], axis=-1), q_pids, g_pids, q_camids,
                              g_camids)

    want = reference(normalize)
    assert got["num_queries"] == want["num_valid_queries"]
    for key, value in [("mAP", want["mAP"]), ("mINP", want["mINP"]), ("rank1", want["cmc"][0]),
                       ("rank5", want["cmc"][4]), ("rank10", want["cmc"][9]), ("rank20", want["cmc"][19])]:
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert abs(reference(not normalize)["mAP"] - want["mAP"]) > 0.01  # the choice matters on these embeddings
