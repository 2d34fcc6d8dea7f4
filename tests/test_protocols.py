"""Each dataset's evaluation protocol on hand-worked cases, and the paper's schedule from loaded splits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msml_jax import sharding
from msml_jax.evaluation.evaluator import EvalSettings, Evaluator
from msml_jax.evaluation.protocols import rank_images, single_gallery_shot
from msml_jax.evaluation.report import format_table, ten_split_summaries


def _grey_apply(variables, images, train=False):
    """A 'model' whose embedding is an image's mean colour: known features for hand-worked rankings."""
    return {"embeddings": jnp.mean(images.astype(jnp.float32), axis=(1, 2))}


def _frames(values):
    return np.stack([np.full((4, 2, 3), v, np.uint8) for v in values])


def test_tracklet_protocol_pools_frames_per_tracklet_and_removes_same_camera_matches():
    # Frames of the query tracklet 0 (pid 1, cam 0) and of gallery tracklets 1..4, interleaved so that a
    # tracklet's frames arrive in different batches of 2. Embedding of a frame = (v, v, v).
    query = {"images": _frames([10, 30]), "pids": np.array([1, 1]), "camids": np.array([0, 0]),
             "tracklet": np.array([0, 0])}
    # tracklet: 1 = pid 1 cam 0 (junk), 2 = pid 2 cam 1, 3 = pid 1 cam 1 (the match), 4 = pid 3 cam 2
    gallery_frames = [(1, 20), (2, 24), (3, 0), (2, 26), (4, 40), (3, 54)]
    tracklets = np.array([t for t, _ in gallery_frames])
    meta = {1: (1, 0), 2: (2, 1), 3: (1, 1), 4: (3, 2)}
    gallery = {"images": _frames([v for _, v in gallery_frames]), "tracklet": tracklets,
               "pids": np.array([meta[t][0] for t in tracklets]), "camids": np.array([meta[t][1] for t in tracklets])}
    sets = {"mars": {"query": query, "gallery": gallery, "protocol": "tracklet", "ranking": "tracklet", "trial": None}}
    mesh = sharding.make_mesh(jax.devices()[:1])
    results = {}
    for pooling in ("avg", "max"):
        settings = EvalSettings(pooling=pooling, normalize=False, batch_size=2, image_size=(4, 2))
        evaluator = Evaluator(_grey_apply, sets, settings, mesh)
        features = evaluator.features({})
        results[pooling] = (features, evaluator.score(features, step=7)[0])
    features, record = results["avg"]
    # avg: query 20; gallery tracklets 1..4 -> 20, 25, 27, 40
    np.testing.assert_allclose(features["mars"]["query"]["embeddings"], [[20, 20, 20]])
    np.testing.assert_allclose(features["mars"]["gallery"]["embeddings"][:, 0], [20, 25, 27, 40])
    np.testing.assert_array_equal(features["mars"]["gallery"]["pids"], [1, 2, 1, 3])
    np.testing.assert_array_equal(features["mars"]["gallery"]["camids"], [0, 1, 1, 2])
    # Tracklet 1 (distance 0) is junk; then 2 (5), 3 (7, the match), 4: the match at rank 2.
    assert record["rank1"] == 0.0 and record["rank5"] == 1.0
    assert record["mAP"] == pytest.approx(0.5) and record["mINP"] == pytest.approx(0.5)
    assert record["num_queries"] == 1 and record["protocol"] == "tracklet" and record["step"] == 7
    features, record = results["max"]
    # max: query 30; gallery 20 (junk), 26 (d 4), 54 (d 24, the match), 40 (d 10): the match at rank 3.
    np.testing.assert_allclose(features["mars"]["gallery"]["embeddings"][:, 0], [20, 26, 54, 40])
    assert record["mAP"] == pytest.approx(1 / 3) and record["rank1"] == 0.0 and record["rank5"] == 1.0


def test_flip_test_averages_an_image_and_its_mirror():
    # Left half 0, right half 200: the 'model' embeds the mean of the left column only.
    images = np.zeros((1, 2, 2, 3), np.uint8)
    images[:, :, 1] = 200

    def left_column(variables, x, train=False):
        return {"embeddings": x[:, :, 0].astype(jnp.float32).mean(axis=1)}

    split = {"images": images, "pids": np.array([0]), "camids": np.array([0])}
    sets = {"s": {"query": split, "gallery": split, "protocol": "image", "ranking": "image", "trial": None}}
    mesh = sharding.make_mesh(jax.devices()[:1])
    for flip, expected in ((False, 0.0), (True, 100.0)):
        settings = EvalSettings(flip=flip, batch_size=1, image_size=(2, 2))
        embeddings = Evaluator(left_column, sets, settings, mesh).features({})["s"]["query"]["embeddings"]
        np.testing.assert_allclose(embeddings, [[expected] * 3])


def test_cosine_and_euclidean_rankings_against_a_brute_force_loop():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(5, 4)), rng.normal(size=(9, 4)) * rng.uniform(0.2, 3, (9, 1))
    q_pids, g_pids = rng.integers(0, 3, 5), rng.integers(0, 3, 9)
    q_pids[:3] = g_pids[:3]
    q_cams, g_cams = np.zeros(5, int), np.ones(9, int)
    for metric, normalize in (("cosine", True), ("euclidean", False)):
        def dist(a, b):
            if metric == "cosine":
                return 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            return np.linalg.norm(a - b)

        aps = []
        for i in range(5):
            order = sorted(range(9), key=lambda j: dist(q[i], g[j]))
            hits = [g_pids[j] == q_pids[i] for j in order]
            if any(hits):
                ranks = [r + 1 for r, h in enumerate(hits) if h]
                aps.append(np.mean([(k + 1) / r for k, r in enumerate(ranks)]))
        got = rank_images({"embeddings": q, "pids": q_pids, "camids": q_cams},
                          {"embeddings": g, "pids": g_pids, "camids": g_cams}, metric=metric, normalize=normalize)
        assert got["mAP"] == pytest.approx(np.mean(aps), abs=1e-6)


def test_single_gallery_shot_ranks_against_one_drawn_image_per_identity():
    # One query of pid 0. Gallery: pid 0 has a close image (d 1) and a far one (d 3), pid 1 one image (d 2).
    # A draw picking the close image ranks the match 1st, else 2nd: rank-1 = share of draws picking it,
    # mAP (reciprocal rank) = rank-1 + (1 - rank-1) / 2.
    query = {"pids": np.array([0]), "camids": np.array([0])}
    gallery = {"pids": np.array([0, 1, 0]), "camids": np.array([1, 1, 1])}
    distances = np.array([[1.0, 2.0, 3.0]])
    ten = single_gallery_shot(query, gallery, distances=distances)
    assert math.isclose(ten["rank1"] * 10, round(ten["rank1"] * 10))  # a share of 10 draws
    assert ten["mAP"] == pytest.approx(ten["rank1"] + (1 - ten["rank1"]) / 2)
    assert ten["rank5"] == 1.0
    assert single_gallery_shot(query, gallery, distances=distances) == ten  # fixed seed: the same draws
    many = single_gallery_shot(query, gallery, distances=distances, repeats=2000)
    assert abs(many["rank1"] - 0.5) < 0.05  # each image of pid 0 drawn half the time
    # With one image per identity there is nothing to draw: the image ranking itself.
    one = {"pids": np.array([0, 1]), "camids": np.array([1, 1])}
    d = np.array([[2.0, 1.0]])
    assert single_gallery_shot(query, one, distances=d)["mAP"] == pytest.approx(0.5)
    assert single_gallery_shot(query, one, distances=d)["rank1"] == 0.0


def test_ten_split_summary_is_the_mean_and_std_over_trials():
    records = [{"step": 9, "dataset": "viper", "protocol": "ten_split", "trial": t, "flip": False,
                "metric": "euclidean", "mAP": m, "rank1": r, "rank5": 0.5, "rank10": 0.6, "rank20": 0.7, "mINP": 0.1}
               for t, m, r in ((0, 0.2, 0.1), (1, 0.4, 0.3), (2, 0.3, 0.2))]
    (summary,) = ten_split_summaries(records + [{**records[0], "dataset": "market1501", "trial": None}])
    assert summary["num_trials"] == 3 and summary["trials"] == [0, 1, 2]
    assert summary["mAP"] == pytest.approx(0.3) and summary["mAP_std"] == pytest.approx(math.sqrt(0.02 / 3))
    assert summary["rank1"] == pytest.approx(0.2) and summary["rank5_std"] == pytest.approx(0.0)
    table = format_table(records)
    assert "viper (3 splits)" in table and "30.0 ± 8.2" in table and "viper #2" in table


# ---------------------------------------------------------------- real protocols from generated releases


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """One manual dir holding generated Market-1501, MARS, CUHK03 and CUHK-SYSU releases; a data_dir."""
    from tests.builder_fakes import cuhk03, cuhk_sysu, market1501, mars

    manual = tmp_path_factory.mktemp("releases")
    market1501.make(str(manual))
    mars.make(str(manual))
    cuhk03.make(str(manual))
    cuhk_sysu.make(str(manual))
    return str(manual), str(tmp_path_factory.mktemp("tfds"))


def _paper(arg, releases):
    from tests.conftest import load_config

    config = load_config("paper", arg)
    config.data.manual_dir, config.data.data_dir = releases
    config.model.name, config.model.embed_dim = "small_resnet", 16
    config.data.image_size = (32, 16)
    config.P, config.K, config.batch_size = 2, 2, 4
    config.eval_batch_size = 8
    return config


def _num_train_ids():
    """Training identities of each generated release, from the fakes' own descriptions."""
    from msml_jax.data.builders.cuhk03 import CLASSIC_SPLIT
    from tests.builder_fakes import cuhk03, cuhk_sysu, market1501, mars

    classic_test = set(cuhk03.testsets()[CLASSIC_SPLIT])
    return {"market1501": len({r[0] for r in market1501.TRAIN}), "mars": len({t[0] for t in mars.TRAIN_TRACKS}),
            "cuhk03": len({(p, q) for p, q, _ in cuhk03.cells("labeled")} - classic_test),
            "cuhk_sysu": len(cuhk_sysu.TRAIN)}


@pytest.mark.parametrize("dataset", ["cuhk03", "all"])
def test_paper_steps_per_epoch_come_from_the_loaded_training_split(releases, dataset):
    from msml_jax.training.trainer import setup

    config, train, eval_sets, _, _ = setup(_paper(f"{dataset},resnet50,msml", releases))
    ids = _num_train_ids()
    num_ids = sum(ids.values()) if dataset == "all" else ids["cuhk03"]
    assert len(np.unique(train["pids"])) == num_ids
    per_epoch = num_ids // 2
    assert config.num_train_steps == 250 * per_epoch
    assert tuple(config.lr_boundaries) == (50 * per_epoch, 200 * per_epoch)
    assert (config.checkpoint_every_steps, config.eval_every_steps) == (10 * per_epoch, 25 * per_epoch)
    assert eval_sets["cuhk03"]["protocol"] == "classic" and eval_sets["cuhk03"]["ranking"] == "single_gallery_shot"


def test_training_on_all_evaluates_each_dataset_in_its_protocol(releases, tmp_path):
    from msml_jax.data.builders.cuhk03 import CLASSIC_SPLIT
    from msml_jax.training.loop import train_and_evaluate
    from tests.builder_fakes import cuhk03, cuhk_sysu, market1501, mars

    config = _paper("all,resnet50,msml", releases)
    config.num_train_steps, config.lr_boundaries = 2, (1,)
    config.checkpoint_every_steps, config.eval_every_epochs, config.log_every_steps = 2, 0, 1
    records = {r["dataset"]: r for r in train_and_evaluate(config, str(tmp_path / "run"))}
    assert set(records) == {"market1501", "mars", "cuhk03", "cuhk_sysu"}
    assert {d: r["protocol"] for d, r in records.items()} == {
        "market1501": "image", "mars": "tracklet", "cuhk03": "classic", "cuhk_sysu": "image"}
    # Queries counted independently: MARS ranks its query TRACKLETS (not frames); CUHK03 classic's queries are
    # the test identities' first-camera images; Market's queries all have a cross-camera match.
    assert records["mars"]["num_queries"] == len(mars.QUERY_ROWS)
    classic_test = set(cuhk03.testsets()[CLASSIC_SPLIT])
    first_camera = [c for c in cuhk03.cells("labeled") if c[:2] in classic_test and c[2] <= 5]
    assert records["cuhk03"]["num_queries"] == len(first_camera)
    assert records["market1501"]["num_queries"] == len(market1501.QUERY)
    assert records["cuhk_sysu"]["num_queries"] == len(cuhk_sysu.TEST)
    assert all(0 <= r["mAP"] <= 1 and r["step"] == 2 for r in records.values())


# ---------------------------------------------------------------- k-reciprocal re-ranking (issue 10)
def test_rank_images_with_rerank_ranks_by_the_reranked_distances():
    from msml_jax.evaluation.ranking import evaluate_ranking
    from msml_jax.evaluation.rerank import k_reciprocal_rerank

    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((6, 8)).astype(np.float32), rng.standard_normal((30, 8)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 5, 6), rng.integers(0, 5, 30)
    q_cams, g_cams = np.zeros(6, int), np.ones(30, int)

    def dist(a, b):
        return np.linalg.norm(a[:, None].astype(np.float64) - b[None], axis=-1).astype(np.float32)

    reranked = k_reciprocal_rerank(dist(q, g), dist(q, q), dist(g, g), k1=5, k2=2, lambda_value=0.3)
    want = evaluate_ranking(reranked, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    got = rank_images({"embeddings": q, "pids": q_pids, "camids": q_cams},
                      {"embeddings": g, "pids": g_pids, "camids": g_cams}, normalize=False, rerank=(5, 2, 0.3))
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-12)
    assert got["rank1"] == want["cmc"][0] and got["rank5"] == want["cmc"][4]


def test_rerank_settings_are_refused_naming_the_value():
    from msml_jax.errors import UserError
    from msml_jax.config import validate_config
    from tests.conftest import make_tiny_config

    config = make_tiny_config()
    config.eval.rerank, config.eval.k1, config.eval.k2 = True, 20, 21
    with pytest.raises(UserError, match=r"config.eval.k2=21 must be at most config.eval.k1=20"):
        validate_config(config)
    sets = {"tiny": {"ranking": "image", "query": {"pids": np.zeros(2)}, "gallery": {"pids": np.zeros(7)}}}
    with pytest.raises(UserError, match=r"config.eval.k1=20 \(re-ranking\) is larger than the gallery of tiny "
                                        r"\(7 items\): set it to at most 7"):
        Evaluator(None, sets, EvalSettings(rerank=(20, 6, 0.3)), None)


@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize("batch_size", [2, 16])  # a tracklet's frames over several batches; all in one batch
def test_pooling_of_negative_frame_features(pooling, batch_size):
    # Frame features below 0 (mean colour - 100): max pooling must start from -inf, not from 0.
    from msml_jax.evaluation.retrieval import embed_split

    values = [10, 30, 50, 5, 60, 20, 90]
    groups = np.array([4, 4, 7, 2, 7, 2, 7])
    split = {"images": _frames(values), "pids": np.zeros(7, int), "camids": np.zeros(7, int)}
    embed = jax.jit(lambda variables, x: jnp.mean(x.astype(jnp.float32), axis=(1, 2)) - 100.0)
    pooled, ids, first = embed_split(embed, {}, split, batch_size=batch_size, image_size=(4, 2), groups=groups,
                                     pooling=pooling)
    reduce = np.mean if pooling == "avg" else np.max
    want = {g: reduce([v - 100.0 for v, h in zip(values, groups) if h == g]) for g in (2, 4, 7)}
    np.testing.assert_array_equal(ids, [2, 4, 7])
    np.testing.assert_array_equal(first, [3, 0, 2])
    np.testing.assert_allclose(pooled, np.repeat([[want[2]], [want[4]], [want[7]]], 3, axis=1), rtol=1e-6)
    assert pooled.max() < 0


@pytest.mark.parametrize("rerank", [False, True])
def test_eval_settings_read_every_field_of_the_config(rerank):
    # Every config.eval field, set away from its default, reaches the settings the evaluator ranks with.
    from msml_jax.config import validate_config
    from tests.conftest import make_tiny_config

    from msml_jax.config import all_fields

    changed = dict(flip=True, metric="cosine", pooling="max", rerank=rerank, k1=7, k2=3, lambda_value=0.45)
    assert {f"eval.{name}" for name in changed} == {f for f in all_fields() if f.startswith("eval.")}
    config = make_tiny_config()
    config.eval.update(**changed)
    config.normalize, config.eval_batch_size = False, 10
    validate_config(config)  # the field names above are the schema's
    settings = EvalSettings.from_config(config, num_devices=4)
    assert settings == EvalSettings(flip=True, metric="cosine", pooling="max", normalize=False,
                                    rerank=(7, 3, 0.45) if rerank else None, batch_size=12, image_size=(32, 16))
