"""The official evaluations of MARS and Market-1501 (`--protocol official`) against a transcription of their MATLAB.

`_compute_ap` and `_official_evaluation` below transcribe, loop for loop, `compute_AP.m` and `evaluation_mars.m`
of MARS-evaluation (github.com/liangzheng06/MARS-evaluation; Market-1501's `evaluation.m` has the same rules with
its own gallery): junk = identity -1 or same identity and camera; a junk entry takes no rank; AP by the trapezoid
rule; MATLAB's stable `sort`; a query without a match scores AP 0 and CMC 0 and still counts. `process_box_feat.m`
(max pooling of a tracklet's frames, then l2 normalization) and `pdist2(..., 'euclidean')` make the distances.
Nothing here calls the library's ranking.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msml_jax import sharding
from msml_jax.evaluation import search
from msml_jax.evaluation.evaluator import EvalSettings, Evaluator
from tests.conftest import ROOT, make_tiny_config

RANKS = (1, 5, 10, 20)


def _compute_ap(good, junk, index):
    """compute_AP.m: (ap, cmc [len(index)]) of one query; `index` = gallery indices by ascending distance."""
    cmc = np.zeros(len(index))
    ngood = len(good)
    old_recall, old_precision, ap, intersect_size, j, good_now, njunk = 0.0, 1.0, 0.0, 0, 0, 0, 0
    for n in range(len(index)):
        flag = False
        if index[n] in good:
            cmc[n - njunk:] = 1  # MATLAB: cmc(n-njunk:end) = 1, n 1-based
            flag = True
            good_now += 1
        if index[n] in junk:
            njunk += 1
            continue
        if flag:
            intersect_size += 1
        recall = intersect_size / ngood if ngood else np.nan  # MATLAB: 0/0 = NaN
        precision = intersect_size / (j + 1)
        ap += (recall - old_recall) * ((old_precision + precision) / 2)
        old_recall, old_precision = recall, precision
        j += 1
        if good_now == ngood:
            return ap, cmc
    return ap, cmc


def _official_evaluation(dist, label_gallery, label_query, cam_gallery, cam_query):
    """evaluation_mars.m: (CMC [G], mAP) from dist [G, Q] (gallery rows, query columns)."""
    junk0 = list(np.flatnonzero(label_gallery == -1))
    num_q = dist.shape[1]
    ap, cmc = np.zeros(num_q), np.zeros((dist.shape[0], num_q))
    for k in range(num_q):
        pos = np.flatnonzero(label_gallery == label_query[k])
        good = list(pos[cam_gallery[pos] != cam_query[k]])
        junk = junk0 + list(pos[cam_gallery[pos] == cam_query[k]])
        index = np.argsort(dist[:, k], kind="stable")  # MATLAB's sort is stable
        ap[k], cmc[:, k] = _compute_ap(good, junk, index)
    ap[np.isnan(ap)] = 0
    return cmc.sum(axis=1) / num_q, ap.sum() / num_q


def _pdist2(a, b):
    return np.array([[np.sqrt(np.sum((x - y) ** 2)) for y in b] for x in a])


def _official_metrics(dist, label_gallery, label_query, cam_gallery, cam_query):
    cmc, m_ap = _official_evaluation(dist, label_gallery, label_query, cam_gallery, cam_query)
    return {"mAP": m_ap, **{f"rank{k}": cmc[min(k, len(cmc)) - 1] for k in RANKS}}


# ------------------------------------------------------------------ hand-made MARS test set
# tracks_test_info rows (pid, camera): 0-based row = tracklet id. Queries: rows 0, 3, 8, 9, 10.
TRACKS = [(1, 1), (1, 2), (1, 1), (2, 3), (2, 4), (0, 1), (0, 5), (-1, 2), (7, 1), (7, 3), (8, 2), (3, 5), (1, 6),
          (2, 2), (-1, 4)]
QUERY_ROWS = [0, 3, 8, 9, 10]
# row 2: junk for query 0 (same identity and camera); 5, 6: distractors (pid 0); 7, 14: junk (pid -1); 8, 9: an
# identity seen only among the queries (matched only when the queries are in the gallery); 10: an identity seen
# once (no match under any rule: scores 0 in the official average); 11 and 12 share their frames (a tie between a
# match of query 0 and another identity), and so do 9 and 4 (a tie between a query and a match of query 3).
SAME_FRAMES = {12: 11, 9: 4}


def _frames_of_tracks(seed=0):
    """{row: uint8 colours [frames, 3]}: 1-4 frames a tracklet; `SAME_FRAMES` rows copy another row's."""
    rng = np.random.default_rng(seed)
    frames = {row: rng.integers(0, 256, (int(rng.integers(1, 5)), 3)).astype(np.uint8) for row in range(len(TRACKS))}
    frames.update({row: frames[other] for row, other in SAME_FRAMES.items()})
    return frames


def _colour_apply(variables, images, train=False):
    """A 'model' whose embedding is an image's mean colour: a one-colour frame embeds as its colour."""
    return {"embeddings": jnp.mean(images.astype(jnp.float32), axis=(1, 2))}


def _split(rows, frames):
    """A split of the frames of `rows` (one-colour 4x2 images), shuffled so that tracklets interleave."""
    items = [(row, colour) for row in rows for colour in frames[row]]
    order = np.random.default_rng(1).permutation(len(items))
    items = [items[i] for i in order]
    return {"images": np.stack([np.broadcast_to(c, (4, 2, 3)) for _, c in items]).astype(np.uint8),
            "tracklet": np.array([r for r, _ in items]), "pids": np.array([TRACKS[r][0] for r, _ in items]),
            "camids": np.array([TRACKS[r][1] - 1 for r, _ in items])}


def _transcription(frames):
    """evaluation_mars.m on the hand-made set, with process_box_feat.m's max pooling and normalization."""
    feat = np.stack([frames[row].astype(np.float64).max(axis=0) for row in range(len(TRACKS))])
    feat /= np.sqrt((feat ** 2).sum(axis=1, keepdims=True))
    labels, cams = np.array([t[0] for t in TRACKS]), np.array([t[1] for t in TRACKS])
    dist = _pdist2(feat, feat[QUERY_ROWS])  # [all test tracklets, queries]
    return _official_metrics(dist, labels, labels[QUERY_ROWS], cams, cams[QUERY_ROWS])


def _separation_by_loops(frames, query_rows, item_rows, pool=np.max):
    """The records' separation figures, pair by pair: each query tracklet against each item tracklet (pooled
    frames, L2-normalised, Euclidean); same identity and camera = junk (the query itself too), same identity =
    positive, another = negative."""
    feat = {row: pool(frames[row].astype(np.float64), axis=0) for row in range(len(TRACKS))}
    feat = {row: f / np.sqrt(np.sum(f ** 2)) for row, f in feat.items()}
    pos, neg = [], []
    for q in query_rows:
        for g in sorted(item_rows):
            d = np.sqrt(np.sum((feat[q] - feat[g]) ** 2))
            if TRACKS[q][0] != TRACKS[g][0]:
                neg.append(d)
            elif TRACKS[q][1] != TRACKS[g][1]:
                pos.append(d)
    auc = np.mean([[1.0 if n > p else 0.5 if n == p else 0.0 for n in neg] for p in pos])
    return {"auc": auc, "neg_closer_than_median_pos": np.mean(np.array(neg) < np.median(pos)),
            "gap_p95_p5": np.percentile(neg, 5) - np.percentile(pos, 95)}


@pytest.mark.parametrize("eval_block_bytes", [None, 1], ids=["one_block", "a_block_per_query"])
def test_mars_official_protocol_equals_the_transcribed_matlab(monkeypatch, eval_block_bytes):
    if eval_block_bytes:  # evaluate_ranking_blocks then ranks one query at a time
        monkeypatch.setattr(search, "_EVAL_BLOCK_BYTES", eval_block_bytes)
    frames = _frames_of_tracks()
    want = _transcription(frames)
    # The builder's splits: query_IDX's tracklets, and the other test tracklets; junk (pid -1) dropped from both.
    kept = [row for row in range(len(TRACKS)) if TRACKS[row][0] != -1]
    sets = {"mars": {"query": _split(QUERY_ROWS, frames), "gallery": _split(set(kept) - set(QUERY_ROWS), frames),
                     "protocol": "official", "ranking": "tracklet_official", "trial": None}}
    # config.eval.pooling avg: the official protocol pools with max whatever it says.
    settings = EvalSettings(pooling="avg", normalize=True, batch_size=4, image_size=(4, 2))
    evaluator = Evaluator(_colour_apply, sets, settings, sharding.make_mesh(jax.devices()[:1]))
    (record,) = evaluator.score(evaluator.features({}), step=3)
    assert record["num_queries"] == len(QUERY_ROWS)  # every query counts, the one without a match too
    assert (record["protocol"], record["pooling"], record["ap_mode"]) == ("official", "max", "official")
    for key, value in want.items():
        assert record[key] == pytest.approx(value, abs=1e-6), key
    assert 0 < want["mAP"] < 1 and want["rank1"] < want["rank5"]  # the case is not degenerate
    # Its separation figures pair each query with every test tracklet too, as it ranks them (a loop over pairs).
    want_separation = _separation_by_loops(frames, QUERY_ROWS, kept)
    for key, value in want_separation.items():
        assert record[key] == pytest.approx(value, abs=1e-5), key

    # The toolkit protocol (the default) on the same features: the non-query gallery, queries without a match
    # there skipped (8, 9: their identity is only among the queries; 10: seen once).
    sets["mars"].update(protocol="tracklet", ranking="tracklet")
    evaluator = Evaluator(_colour_apply, sets, settings, sharding.make_mesh(jax.devices()[:1]))
    (toolkit,) = evaluator.score(evaluator.features({}), step=3)
    assert (toolkit["num_queries"], toolkit["pooling"], toolkit["ap_mode"]) == (2, "avg", "mean_precision")
    # ... and its separation figures pair the queries with the non-query gallery only (avg pooling).
    toolkit_separation = _separation_by_loops(frames, QUERY_ROWS, set(kept) - set(QUERY_ROWS), pool=np.mean)
    for key, value in toolkit_separation.items():
        assert toolkit[key] == pytest.approx(value, abs=1e-5), key
    assert toolkit_separation != want_separation


def test_market_official_protocol_equals_the_transcribed_matlab(monkeypatch):
    """Market-1501's evaluation.m: its own gallery (the queries not in it), junk -1 and same camera, trapezoid AP;
    ties between a match and a non-match, distractors (pid 0)."""
    from msml_jax.evaluation.protocols import get_protocol

    monkeypatch.setattr(search, "_EVAL_BLOCK_BYTES", 1)
    rng = np.random.default_rng(3)
    g_pids = np.array([1, 1, 2, 2, 3, 3, 0, 0, -1, 4, 4, 1])
    g_cams = np.array([0, 1, 2, 0, 1, 2, 0, 3, 1, 0, 2, 2])
    q_pids, q_cams = np.array([1, 2, 3, 4, 1]), np.array([0, 1, 0, 2, 2])
    gallery = rng.integers(0, 4, (len(g_pids), 3)).astype(np.float32)  # small integers: many exact ties
    gallery[11] = gallery[6]  # a match of queries 0 and 4 tied with a distractor listed before it
    query = rng.integers(0, 4, (len(q_pids), 3)).astype(np.float32)
    want = _official_metrics(_pdist2(gallery.astype(np.float64), query.astype(np.float64)), g_pids, q_pids, g_cams,
                             q_cams)
    kept = g_pids != -1  # the builder drops junk images
    record = get_protocol("image_official").rank(
        {"embeddings": query, "pids": q_pids, "camids": q_cams},
        {"embeddings": gallery[kept], "pids": g_pids[kept], "camids": g_cams[kept]},
        metric="euclidean", normalize=False, rerank=None)
    assert record["num_queries"] == len(q_pids)
    for key, value in want.items():
        assert record[key] == pytest.approx(value, abs=1e-6), key


# ------------------------------------------------------------------ eval.py --protocol official on a MARS run
# A MARS release (the fakes' layout and names) whose test part has an identity seen only among the queries.
RUN_TEST_TRACKS = [(4, 1, 1, 2), (4, 2, 1, 2), (4, 1, 2, 2), (5, 3, 1, 2), (5, 4, 1, 2), (6, 1, 1, 2), (6, 2, 1, 2),
                   (0, 1, 1, 2), (-1, 2, 1, 2)]
RUN_QUERY_ROWS = [1, 4, 6, 7]  # 1-based rows: pid 4 camera 1, pid 5 camera 3, pid 6 cameras 1 and 2


def test_eval_py_protocol_official_on_a_trained_mars_run(tmp_path):
    import scipy.io

    from msml_jax.training.loop import train_and_evaluate
    from tests.builder_fakes import mars as fake

    manual = str(tmp_path / "manual")
    fake._write_part(manual, "bbox_train", fake.TRAIN_TRACKS, "track_train_info", 0)
    fake._write_part(manual, "bbox_test", RUN_TEST_TRACKS, "track_test_info", 1000)
    scipy.io.savemat(os.path.join(manual, "info", "query_IDX.mat"), {"query_IDX": np.array([RUN_QUERY_ROWS], float)})
    config = make_tiny_config()
    config.data.name, config.data.manual_dir, config.data.data_dir = "mars", manual, str(tmp_path / "tfds")
    config.P, config.K, config.batch_size = 2, 2, 4
    config.num_train_steps, config.lr_boundaries = 2, (1,)
    config.checkpoint_every_steps, config.eval_every_steps, config.log_every_steps = 2, 0, 1
    workdir = str(tmp_path / "run")
    (trained,) = train_and_evaluate(config, workdir)
    # The default (toolkit) protocol skips the pid 6 queries: their only matches are queries.
    assert (trained["protocol"], trained["num_queries"]) == ("tracklet", 2)
    assert (trained["pooling"], trained["ap_mode"]) == ("avg", "mean_precision")

    features = str(tmp_path / "features.npz")
    result = subprocess.run([sys.executable, "eval.py", f"--workdir={workdir}", "--protocol=official",
                             f"--save_features={features}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mars (official)" in result.stdout
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        record = json.loads(f.read().splitlines()[-1])
    assert (record["dataset"], record["protocol"], record["pooling"], record["ap_mode"]) == (
        "mars", "official", "max", "official")
    assert record["num_queries"] == len(RUN_QUERY_ROWS)
    # Its figures are the transcribed evaluation_mars.m on the features eval.py used (max-pooled tracklets).
    saved = np.load(features)
    parts = {p: {k: saved[f"mars/{p}/{k}"] for k in ("embeddings", "pids", "camids", "tracklet")}
             for p in ("query", "gallery")}
    every = {k: np.concatenate([parts["query"][k], parts["gallery"][k]]) for k in parts["query"]}
    order = np.argsort(every["tracklet"])
    every = {k: v[order] for k, v in every.items()}
    emb = every["embeddings"].astype(np.float64)
    emb /= np.sqrt((emb ** 2).sum(axis=1, keepdims=True))
    q_emb = parts["query"]["embeddings"].astype(np.float64)
    q_emb /= np.sqrt((q_emb ** 2).sum(axis=1, keepdims=True))
    want = _official_metrics(_pdist2(emb, q_emb), every["pids"], parts["query"]["pids"], every["camids"],
                             parts["query"]["camids"])
    for key, value in want.items():
        assert record[key] == pytest.approx(value, abs=1e-5), key
