import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msml_jax.errors import UserError
from msml_jax.models import BACKBONES, get_model


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_init(model, shape):
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros(shape, jnp.uint8))


def test_outputs_and_shapes():
    model = get_model("small_resnet", num_classes=7, embed_dim=12)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (3, 32, 16, 3), np.uint8))
    variables = model.init(jax.random.key(0), images, train=False)
    out = model.apply(variables, images, train=False)
    assert out["features"].shape == (3, 128)
    assert out["embeddings"].shape == (3, 12)
    assert out["logits"].shape == (3, 7)
    # The embedding is the FC of the pooled features; the logits the classifier of the embedding.
    head = variables["params"]["head"]
    np.testing.assert_allclose(
        out["embeddings"], out["features"] @ head["embedding"]["kernel"] + head["embedding"]["bias"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        out["logits"], out["embeddings"] @ head["classifier"]["kernel"] + head["classifier"]["bias"], rtol=1e-5, atol=1e-5
    )


def test_train_mode_updates_batchnorm_statistics_and_eval_mode_uses_them():
    model = get_model("small_resnet", num_classes=3, embed_dim=4)
    images = jnp.asarray(np.random.default_rng(1).integers(0, 255, (4, 32, 16, 3), np.uint8))
    variables = model.init(jax.random.key(0), images, train=False)
    _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    # Inference is per-image: an image's embedding does not depend on the rest of the batch.
    single = model.apply(variables, images[:1], train=False)["embeddings"]
    batch = model.apply(variables, images, train=False)["embeddings"]
    np.testing.assert_allclose(single[0], batch[0], rtol=1e-4, atol=1e-5)


def test_resnet18_backbone_has_torchvisions_parameter_count():
    # torchvision.models.resnet18(): 11,689,512 parameters, of which fc holds 512 * 1000 + 1000.
    variables = _abstract_init(get_model("resnet18", num_classes=10, embed_dim=8), (1, 64, 32, 3))
    assert _count(variables["params"]["backbone"]) == 11_689_512 - 513_000


def test_bfloat16_computes_in_bf16_with_float32_parameters():
    model = get_model("small_resnet", num_classes=3, embed_dim=4, dtype="bfloat16")
    images = jnp.zeros((2, 32, 16, 3), jnp.uint8)
    variables = model.init(jax.random.key(0), images, train=False)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    out = model.apply(variables, images, train=False)
    assert out["embeddings"].dtype == jnp.float32
    hlo = jax.jit(functools.partial(model.apply, train=False)).lower(variables, images).as_text()
    assert "bf16" in hlo


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet9000'.*small_resnet"):
        get_model("resnet9000", num_classes=3)


# --- ImageNet backbones: parameter counts (abstract init, nothing compiled) ---------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        # torchvision totals minus fc (2048 * 1000 + 1000 = 2,049,000 for the bottleneck ResNets).
        ("resnet50", 25_557_032 - 2_049_000),  # = 23,508,032
        ("resnet101", 44_549_160 - 2_049_000),
        ("resnext50_32x4d", 25_028_904 - 2_049_000),
        ("resnet34", 21_797_672 - 513_000),
    ],
)
def test_backbone_parameter_counts_match_torchvision(name, expected):
    variables = _abstract_init(get_model(name, num_classes=10, embed_dim=8), (1, 64, 32, 3))
    assert _count(variables["params"]["backbone"]) == expected


def test_resnet50x_is_resnet50_with_depthwise_3x3():
    # Each bottleneck's 3x3 conv of width w holds 9 w^2 weights in ResNet-50 and 9 w when channel-wise.
    blocks_and_widths = [(3, 64), (4, 128), (6, 256), (3, 512)]
    expected = 23_508_032 - sum(n * 9 * (w * w - w) for n, w in blocks_and_widths)
    variables = _abstract_init(get_model("resnet50x", num_classes=10, embed_dim=8), (1, 64, 32, 3))
    assert _count(variables["params"]["backbone"]) == expected
    kernel = variables["params"]["backbone"]["layer4_2"]["conv2"]["kernel"]
    assert kernel.shape == (3, 3, 1, 512)


def _bn_inception_count_from_the_paper():
    """Parameters of BN-Inception counted from the architecture table (Ioffe & Szegedy 2015, appendix).

    Every convolution is bias-free and followed by BatchNorm (scale + shift: 2 per output channel). Module rows:
    #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool projection (0: pass through).
    """
    def conv(cin, cout, k):
        return k * k * cin * cout + 2 * cout

    total = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    rows = [  # the table, modules 3a .. 5b
        (64, 64, 64, 64, 96, 32), (64, 64, 96, 64, 96, 64), (0, 128, 160, 64, 96, 0),
        (224, 64, 96, 96, 128, 128), (192, 96, 128, 96, 128, 128), (160, 128, 160, 128, 160, 128),
        (96, 128, 192, 160, 192, 128), (0, 128, 192, 192, 256, 0),
        (352, 192, 320, 160, 224, 128), (352, 192, 320, 192, 224, 128),
    ]
    cin = 192
    for n1, r3, n3, rd, nd, proj in rows:
        total += (conv(cin, n1, 1) if n1 else 0) + conv(cin, r3, 1) + conv(r3, n3, 3)
        total += conv(cin, rd, 1) + conv(rd, nd, 3) + conv(nd, nd, 3) + (conv(cin, proj, 1) if proj else 0)
        cin = n1 + n3 + nd + (proj if proj else cin)
    return total, cin


def test_inception_v2_matches_the_papers_table():
    expected, channels = _bn_inception_count_from_the_paper()
    assert channels == 1024
    model = get_model("inception_v2", num_classes=10, embed_dim=8)
    variables = _abstract_init(model, (1, 224, 224, 3))
    assert _count(variables["params"]["backbone"]) == expected
    feature_map = jax.eval_shape(
        lambda v, x: model.backbone.apply(_backbone_variables(v), x.astype(jnp.float32), train=False),
        variables, jnp.zeros((2, 224, 224, 3), jnp.uint8),
    )
    assert feature_map.shape == (2, 7, 7, 1024)


def _backbone_variables(v):
    return {"params": v["params"]["backbone"], "batch_stats": v["batch_stats"]["backbone"]}


def _feature_map_shape(name, last_stride, size=(64, 32)):
    model = get_model(name, num_classes=10, embed_dim=8, last_stride=last_stride)
    variables = _abstract_init(model, (1, *size, 3))
    return jax.eval_shape(
        lambda v, x: model.backbone.apply(_backbone_variables(v), x, train=False),
        variables, jnp.zeros((1, *size, 3), jnp.float32),
    ).shape


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_registered_backbone_has_the_stride_it_declares(name):
    """The config schema refuses inputs smaller than a backbone's declared stride: measure it (jax.eval_shape)."""
    size = 8 * BACKBONES[name].stride
    assert _feature_map_shape(name, 2, (size, size))[1:3] == (8, 8)
    assert _feature_map_shape(name, 1, (size, size))[1:3] == (16, 16)


def test_last_stride_one_doubles_the_final_feature_map():
    assert _feature_map_shape("resnet50", 2, (256, 128)) == (1, 8, 4, 2048)
    assert _feature_map_shape("resnet50", 1, (256, 128)) == (1, 16, 8, 2048)
    assert _feature_map_shape("inception_v2", 1, (224, 224)) == (1, 14, 14, 1024)


def _ref_bottleneck_nhwc(x, params, stats, stride_on_first):
    """A ResNet bottleneck by jax.lax directly (NHWC / HWIO), stride 2 on the first 1x1 or on the 3x3."""

    def conv(y, name, stride, pad):
        out = jax.lax.conv_general_dilated(y, params[name]["kernel"], (stride, stride), [(pad, pad)] * 2,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                           precision=jax.lax.Precision.HIGHEST)
        return out + params[name].get("bias", 0.0)

    def bn(y, name):
        p, s = params[name], stats[name]
        return (y - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]

    s1, s3 = (2, 1) if stride_on_first else (1, 2)
    y = jax.nn.relu(bn(conv(x, "conv1", s1, 0), "bn1"))
    y = jax.nn.relu(bn(conv(y, "conv2", s3, 1), "bn2"))
    y = bn(conv(y, "conv3", 1, 0), "bn3")
    return jax.nn.relu(y + bn(conv(x, "downsample_conv", 2, 0), "downsample_bn"))


@pytest.mark.parametrize("keras_style", [False, True])
def test_bottleneck_strides_its_3x3_as_torchvision_or_its_first_1x1_as_keras(keras_style):
    from msml_jax.models.resnet import Bottleneck

    norm = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=1e-5)
    block = Bottleneck(filters=2, strides=2, norm=norm, keras_style=keras_style)
    x = jnp.asarray(np.random.default_rng(8).normal(size=(2, 7, 7, 4)), jnp.float32)
    variables = jax.eval_shape(block.init, jax.random.key(0), x)  # shapes only: nothing compiled
    # Random BatchNorm parameters and statistics (and conv biases, Keras), so nothing is an identity.
    rng = np.random.default_rng(9)
    randomize = lambda t: jax.tree.map(  # noqa: E731
        lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32), t
    )
    variables = {"params": randomize(variables["params"]), "batch_stats": randomize(variables["batch_stats"])}
    params = {k: dict(v) for k, v in variables["params"].items()}
    for name in ("conv1", "conv2", "conv3", "downsample_conv"):  # weights of both signs
        params[name]["kernel"] = params[name]["kernel"] - 1.0
    variables["params"] = params
    out = np.asarray(jax.jit(block.apply)(variables, x))
    assert out.shape == (2, 4, 4, 8)
    reference = jax.jit(_ref_bottleneck_nhwc, static_argnums=3)
    expected = reference(x, params, variables["batch_stats"], keras_style)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    other = reference(x, params, variables["batch_stats"], not keras_style)
    assert np.abs(other - expected).max() > 0.1  # the two layouts are told apart on these weights


def test_basic_block_strides_its_first_3x3_and_its_shortcut():
    from msml_jax.models.resnet import BasicBlock

    norm = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=1e-5)
    block = BasicBlock(filters=6, strides=2, norm=norm)
    x = jnp.asarray(np.random.default_rng(10).normal(size=(2, 7, 7, 4)), jnp.float32)
    variables = jax.eval_shape(block.init, jax.random.key(0), x)
    rng = np.random.default_rng(11)
    params = {k: {n: jnp.asarray(rng.uniform(0.5, 1.5, a.shape) - (n == "kernel"), jnp.float32) for n, a in v.items()}
              for k, v in variables["params"].items()}
    stats = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32), variables["batch_stats"])
    out = np.asarray(jax.jit(block.apply)({"params": params, "batch_stats": stats}, x))

    def conv(y, name, stride, pad):
        return jax.lax.conv_general_dilated(y, params[name]["kernel"], (stride, stride), [(pad, pad)] * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision=jax.lax.Precision.HIGHEST)

    def bn(y, name):
        p, s = params[name], stats[name]
        return (y - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]

    @jax.jit
    def reference(x):  # torchvision's BasicBlock: conv1 3x3/stride, conv2 3x3/1, shortcut 1x1/stride
        y = bn(conv(jax.nn.relu(bn(conv(x, "conv1", 2, 1), "bn1")), "conv2", 1, 1), "bn2")
        return jax.nn.relu(y + bn(conv(x, "downsample_conv", 2, 0), "downsample_bn"))

    expected = reference(x)
    assert out.shape == (2, 4, 4, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


# --- head options ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bnneck_model_and_variables():
    model = get_model("small_resnet", num_classes=5, embed_dim=6, bnneck=True, eval_embedding="bnneck")
    images = jnp.asarray(np.random.default_rng(3).integers(0, 255, (4, 32, 16, 3), np.uint8))
    variables = model.init(jax.random.key(0), images, train=False)
    # Non-trivial statistics and scale, as after training.
    rng = np.random.default_rng(4)
    variables = jax.tree.map(lambda x: x, variables)
    variables["batch_stats"]["head"]["bnneck"] = {"mean": rng.normal(0, 1, 6), "var": rng.uniform(0.5, 2, 6)}
    variables["params"]["head"]["bnneck"] = {"scale": rng.uniform(0.5, 1.5, 6)}
    return model, variables, images


def test_bnneck_normalises_the_embedding_before_a_bias_free_classifier(bnneck_model_and_variables):
    model, variables, images = bnneck_model_and_variables
    out = model.apply(variables, images, train=False)
    stats, head = variables["batch_stats"]["head"]["bnneck"], variables["params"]["head"]
    expected = (np.asarray(out["embeddings"]) - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * head["bnneck"]["scale"]
    np.testing.assert_allclose(out["bnneck"], expected, rtol=1e-5, atol=1e-5)
    assert "bias" not in head["classifier"] and "bias" not in head["bnneck"]
    np.testing.assert_allclose(out["logits"], expected @ head["classifier"]["kernel"], rtol=1e-4, atol=1e-4)
    # Evaluation ranks with the selected embedding (what embed_step uses).
    from msml_jax.evaluation.retrieval import embed_step

    np.testing.assert_allclose(embed_step(model.apply, variables, images), out["bnneck"], rtol=1e-6)
    _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    assert not np.allclose(updates["batch_stats"]["head"]["bnneck"]["mean"], stats["mean"])


@pytest.mark.parametrize("choice", ["embedding", "features"])
def test_eval_embedding_selects_what_evaluation_ranks_with(bnneck_model_and_variables, choice):
    model, variables, images = bnneck_model_and_variables
    model = model.clone(eval_embedding=choice)
    out = model.apply(variables, images, train=False)
    from msml_jax.evaluation.retrieval import embed_step

    expected = out["embeddings"] if choice == "embedding" else out["features"]
    np.testing.assert_array_equal(embed_step(model.apply, variables, images), expected)


def test_dropout_before_the_classifier_only_in_training():
    model = get_model("small_resnet", num_classes=5, embed_dim=64, dropout=0.5)
    images = jnp.asarray(np.random.default_rng(5).integers(0, 255, (2, 32, 16, 3), np.uint8))
    variables = model.init(jax.random.key(0), images, train=False)
    out = model.apply(variables, images, train=False)
    head = variables["params"]["head"]
    # Inference: no dropout, no rng needed.
    expected = out["embeddings"] @ head["classifier"]["kernel"] + head["classifier"]["bias"]
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-4, atol=1e-4)
    train_out, inter = model.apply(
        variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)},
        capture_intermediates=lambda m, _: isinstance(m, nn.Dropout),
    )
    dropped = np.asarray(inter["intermediates"]["head"]["Dropout_0"]["__call__"][0])
    emb = np.asarray(train_out["embeddings"])
    # Inverted dropout at rate 0.5: each entry is 0 or twice the embedding's; the classifier sees exactly that.
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 2 * emb[kept], rtol=1e-5)
    assert 0.25 < kept.mean() < 0.75
    np.testing.assert_allclose(train_out["logits"], dropped @ head["classifier"]["kernel"] + head["classifier"]["bias"],
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="dropout"):
        model.apply(variables, images, train=True, mutable=["batch_stats"])


def test_bfloat16_keeps_batchnorm_statistics_and_outputs_float32():
    model = get_model("small_resnet", num_classes=3, embed_dim=4, dtype="bfloat16", bnneck=True)
    images = jnp.asarray(np.random.default_rng(6).integers(0, 255, (4, 32, 16, 3), np.uint8))
    variables = model.init(jax.random.key(0), images, train=False)
    out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(updates["batch_stats"]))
    assert all(v.dtype == jnp.float32 for v in out.values())
    reference = get_model("small_resnet", num_classes=3, embed_dim=4, bnneck=True).apply(variables, images, train=False)
    low = model.apply(variables, images, train=False)
    scale = float(np.abs(reference["features"]).max())
    np.testing.assert_allclose(low["features"], reference["features"], rtol=0.05, atol=0.05 * scale)


def test_caffe_preprocessing_is_bgr_mean_subtraction():
    # Keras's preprocess_input(mode="caffe"), by hand: RGB -> BGR, minus the ImageNet BGR mean, no scaling.
    images = np.random.default_rng(7).integers(0, 255, (2, 32, 16, 3)).astype(np.uint8)
    caffe = get_model("small_resnet", num_classes=3, embed_dim=4, preprocessing="caffe")
    identity = get_model("small_resnet", num_classes=3, embed_dim=4, pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1))
    variables = caffe.init(jax.random.key(0), images, train=False)
    by_hand = images[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(
        caffe.apply(variables, images, train=False)["features"],
        identity.apply(variables, by_hand, train=False)["features"],
        rtol=1e-5,
        atol=1e-5,
    )
    assert get_model("resnet50", num_classes=3, keras_style=True).channel_order == "bgr"
