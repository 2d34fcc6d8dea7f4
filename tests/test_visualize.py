"""Pictures: the helpers that choose what is drawn against brute force, and the PNGs they produce."""

import json

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from msml_jax.evaluation import evaluate_ranking
from msml_jax.evaluation import visualize
from msml_jax.evaluation.separation import separation_from_distances
from msml_jax.records import read as read_records


def _case(seed=0, num_q=12, num_g=40):
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, 6, num_q)
    q_pids[-1] = 99  # a query without any match
    g_pids = rng.integers(0, 8, num_g)
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    distmat = rng.integers(0, 6, size=(num_q, num_g)).astype(np.float32)  # many ties
    return distmat, q_pids, g_pids, q_cams, g_cams


def _brute_ranking(distmat, q, q_pids, g_pids, q_cams, g_cams):
    """Gallery indices for query q by (distance, index), junk (same pid and camera) removed."""
    order = sorted(range(distmat.shape[1]), key=lambda j: (distmat[q, j], j))
    return [j for j in order if not (g_pids[j] == q_pids[q] and g_cams[j] == q_cams[q])]


def _brute_ap(distmat, q, q_pids, g_pids, q_cams, g_cams):
    ranked = _brute_ranking(distmat, q, q_pids, g_pids, q_cams, g_cams)
    hits, precisions = 0, []
    for rank, j in enumerate(ranked, 1):
        if g_pids[j] == q_pids[q]:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions) if precisions else float("nan")


def test_per_query_ap_and_worst_order_match_brute_force():
    distmat, *ids = _case()
    ap = visualize.per_query_ap(distmat, *ids)
    want = np.array([_brute_ap(distmat, q, *ids) for q in range(len(distmat))])
    np.testing.assert_allclose(ap, want, equal_nan=True)
    assert np.isnan(want).any()  # the case has a query without match
    # Mean over queries with a match is the protocol's mAP.
    assert np.nanmean(ap) == pytest.approx(evaluate_ranking(distmat, *ids)["mAP"])
    worst = sorted((a, q) for q, a in enumerate(want) if not np.isnan(a))
    assert visualize.worst_queries(ap, 5).tolist() == [q for _, q in worst[:5]]


def _colour_pixels(png, colour):
    rgb = imread(png)[..., :3]
    return int(np.count_nonzero(np.all(np.abs(rgb - np.array(to_rgb(colour))) < 0.03, axis=-1)))


def test_ranked_lists_full_matrix(tmp_path):
    distmat, q_pids, g_pids, q_cams, g_cams = _case(1)
    ids = (q_pids, g_pids, q_cams, g_cams)
    # Plain grey images: the frames are the only coloured pixels.
    q_images = np.full((len(q_pids), 16, 8, 3), 128, np.uint8)
    g_images = np.full((len(g_pids), 16, 8, 3), 128, np.uint8)
    path = str(tmp_path / "ranked.png")
    rows = visualize.ranked_lists(path, q_images, g_images, distmat, *ids, num_queries=6, k=8)

    ap = [_brute_ap(distmat, q, *ids) for q in range(len(q_pids))]
    assert [r["query"] for r in rows] == [q for _, q in sorted((a, q) for q, a in enumerate(ap) if a == a)[:6]]
    for row in rows:
        q = row["query"]
        want = _brute_ranking(distmat, q, *ids)[:8]
        assert row["gallery"] == want
        assert row["distances"] == [float(distmat[q, j]) for j in want]
        assert row["match"] == [bool(g_pids[j] == q_pids[q]) for j in want]
        assert row["ap"] == pytest.approx(ap[q])
    # Every frame has the same size: green pixels / coloured pixels = matches / images shown.
    green = _colour_pixels(path, visualize.MATCH_COLOUR)
    red = _colour_pixels(path, visualize.MISMATCH_COLOUR)
    shown = [m for row in rows for m in row["match"]]
    assert 0 < sum(shown) < len(shown)
    assert green / (green + red) == pytest.approx(sum(shown) / len(shown), abs=0.02)


def test_ranked_lists_topk_lazy_images(tmp_path):
    distmat, q_pids, g_pids, q_cams, g_cams = _case(2)
    ids = (q_pids, g_pids, q_cams, g_cams)
    rng = np.random.default_rng(0)
    g_images = rng.integers(0, 256, (len(g_pids), 16, 8, 3), dtype=np.uint8)
    loaded = []

    def gallery_image(i):
        loaded.append(i)
        return g_images[i]

    # Raw top-12 lists still holding junk: ranked_lists drops it.
    order = np.argsort(distmat, axis=1, kind="stable")[:, :12]
    topk = (order, np.take_along_axis(distmat, order, 1))
    with pytest.raises(ValueError, match="needs `ap`"):
        visualize.ranked_lists(str(tmp_path / "x.png"), g_images, gallery_image, topk, *ids)
    path = str(tmp_path / "topk.png")
    rows = visualize.ranked_lists(path, g_images[:len(q_pids)], gallery_image, topk, *ids, query_indices=[3, 0], k=4)
    assert [r["query"] for r in rows] == [3, 0] and rows[0]["ap"] is None
    for row in rows:
        assert row["gallery"] == _brute_ranking(distmat, row["query"], *ids)[:4]
    assert sorted(loaded) == sorted(j for row in rows for j in row["gallery"])  # only the images shown
    assert imread(path).shape[0] > 100


def test_distance_distributions(tmp_path):
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.3, 0.1, 300), rng.normal(0.8, 0.15, 3000)
    path = str(tmp_path / "dist.png")
    figures = visualize.distance_distributions(path, pos, neg, margin=0.3, title="test")
    assert figures == separation_from_distances(pos, neg)
    image = imread(path)
    # The positive histogram is drawn: its bars are the positive colour at alpha 0.65 over white.
    bars = tuple(0.65 * np.array(to_rgb("#2c7bb6")) + 0.35)
    assert image.shape[0] > 200 and _colour_pixels(path, bars) > 1000


def test_training_curves_reports_half_written_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = []
    for step in range(0, 101, 10):
        if step:
            lines.append(json.dumps({"step": step, "loss": 3 - step / 50, "cls_loss": 2.0, "metric_loss": 1.0,
                                     "accuracy": step / 100, "hardest_pos": 0.5, "hardest_neg": 0.4,
                                     "learning_rate": 1e-3 if step < 50 else 1e-4, "images_per_sec": 100.0}))
        if step % 50 == 0:
            for name, scale in (("market1501", 1.0), ("cuhk03", 0.5)):
                lines.append(json.dumps({"step": step, "dataset": name, "mAP": scale * step / 200,
                                         "rank1": scale * step / 150,
                                         "rank5": 0.5, "rank10": 0.6, "mINP": 0.1}))
    metrics.write_text("\n".join(lines) + '\n{"step": 110, "loss": 1.2, "cls_')
    records, bad = read_records(str(metrics))
    assert len(records) == 16 and sum("dataset" in r for r in records) == 6
    assert bad == [(len(lines) + 1, '{"step": 110, "loss": 1.2, "cls_')]
    path = str(tmp_path / "curves.png")
    summary = visualize.training_curves(path, str(metrics))
    assert summary == {"train_records": 10, "eval_records": 6, "bad_lines": bad}
    image = imread(path)[..., :3]
    assert image.shape[0] > 300
    # The skipped line is noted in red text along the bottom edge.
    bottom = image[-25:]
    assert np.count_nonzero((bottom[..., 0] > 0.7) & (bottom[..., 1] < 0.4) & (bottom[..., 2] < 0.4)) > 20


def test_training_curves_leave_out_the_records_of_eval_py(tmp_path):
    # eval.py's records (flip, re-ranking, another metric: a `checkpoint` key) are not points of the training curve.
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": 10, "loss": 2.0, "cls_loss": 1.0, "metric_loss": 1.0, "accuracy": 0.1, "hardest_pos": 0.5,
              "hardest_neg": 0.4, "learning_rate": 1e-3, "images_per_sec": 100.0}]
    lines += [{"step": step, "dataset": "synthetic", "mAP": 0.1 * step, "rank1": 0.1 * step} for step in (0, 10)]
    lines += [{"step": 10, "dataset": "synthetic", "mAP": 0.9, "rank1": 0.9, "flip": True, "checkpoint": "latest"}]
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = visualize.training_curves(str(tmp_path / "curves.png"), str(metrics))
    assert summary == {"train_records": 1, "eval_records": 2, "bad_lines": []}


def test_the_ranked_lists_of_mars_official_rank_against_every_test_tracklet(tmp_path, monkeypatch):
    # MARS's official protocol ranks each query tracklet against all test tracklets, the queries too. Query 0's only
    # match (pid 1, another camera) is query tracklet 1; the gallery split holds pid 2 and a pid 1 tracklet in query
    # 0's camera (junk for it). The picture must show query 1's image first, framed as a match, as the protocol's
    # ranking has it (the gallery split alone has no match for it at all).
    from msml_jax.evaluation.workdir import draw_run
    from tests.conftest import make_tiny_config

    def split(values):
        return {"images": np.stack([np.full((8, 4, 3), v, np.uint8) for v in values])}

    def features(pids, camids, tracklets, embeddings):
        return {"embeddings": np.asarray(embeddings, np.float32), "pids": np.asarray(pids),
                "camids": np.asarray(camids), "tracklet": np.asarray(tracklets), "image_index": np.arange(len(pids))}

    eval_sets = {"mars": {"query": split([10, 20]), "gallery": split([30, 40, 50]), "ranking": "tracklet_official",
                          "protocol": "official"}}
    feats = {"mars": {"query": features([1, 1], [0, 1], [0, 1], [[1, 0], [0.9, 0.1]]),
                      "gallery": features([2, 2, 1], [1, 1, 0], [2, 3, 4], [[0, 1], [0.5, 0.5], [0.7, 0.3]])}}
    drawn = {}
    real = visualize.ranked_lists

    def spy(path, query_images, gallery_images, *args, **kwargs):
        rows = real(path, query_images, gallery_images, *args, **kwargs)
        drawn.update(rows={r["query"]: r for r in rows}, gallery_images=gallery_images)
        return rows

    monkeypatch.setattr(visualize, "ranked_lists", spy)
    draw_run(str(tmp_path), str(tmp_path), eval_sets, feats, make_tiny_config(), 7)
    row = drawn["rows"][0]
    first = row["gallery"][0]
    assert row["match"][0] and row["ap"] == 1.0
    assert np.all(drawn["gallery_images"](first) == 20)  # query tracklet 1's image, read from the query split
    # Query 0 itself and the gallery's pid 1 tracklet (same pid and camera) are never shown; the rest is.
    shown = sorted(int(drawn["gallery_images"](j)[0, 0, 0]) for j in row["gallery"])
    assert shown == [20, 30, 40]
