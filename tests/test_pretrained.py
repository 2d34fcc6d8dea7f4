"""Weights files onto the backbones: Keras parity (an implementation nobody here wrote) and torchvision's layout."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from msml_jax.errors import UserError
from msml_jax.models import get_model, load_pretrained, model_from_config
from msml_jax.models.pretrained import write_safetensors

KERAS_SIZE = 64  # small input keeps Keras's build and our compile short; the weights do not depend on it


def _model_config(**kw):
    fields = dict(name="resnet50", embed_dim=16, last_stride=2, pretrained="", keras_style=False, preprocessing="auto",
                  bnneck=False, dropout=0.0, eval_embedding="embedding")
    return ml_collections.ConfigDict({**fields, **kw})


def _init(model, size, seed=0):
    """Random variables of the model's shapes, without compiling its init (numpy normals; the head included)."""
    abstract = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros((1, *size, 3), jnp.uint8)
    )
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(0, 0.01, s.shape).astype(s.dtype), abstract)


@pytest.fixture(scope="module")
def keras_resnet50(tmp_path_factory):
    """keras.applications.ResNet50 with random BatchNorm parameters and statistics, saved in the legacy h5 layout."""
    keras = pytest.importorskip("keras")  # TensorFlow/Keras is a project dependency: present wherever tests run
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    net = keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=(KERAS_SIZE, KERAS_SIZE, 3)
    )
    rng = np.random.default_rng(0)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            gamma, var = rng.uniform(0.5, 1.5, c), rng.uniform(0.5, 2.0, c)
            # A quarter of the channels with variance far below epsilon (gamma rescaled to keep them O(1)), so
            # that epsilon itself matters: 1e-5 instead of Keras's 1.001e-5 moves the features by ~1e-3.
            tiny = rng.random(c) < 0.25
            var[tiny] = rng.uniform(0, 1e-7, tiny.sum())
            gamma[tiny] *= np.sqrt(var[tiny] + 1.001e-5)
            layer.set_weights([gamma, rng.normal(0, 0.1, c), rng.normal(0, 0.5, c), var])
        elif isinstance(layer, keras.layers.Conv2D):  # non-zero biases, so that a dropped bias would show
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])
    path = str(tmp_path_factory.mktemp("keras") / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    # Keras's own writer of the legacy Keras 2 layout (root attribute layer_names, per-layer weight_names),
    # the layout of the published ImageNet file.
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, net)
    keras3_path = str(tmp_path_factory.mktemp("keras3") / "resnet50.weights.h5")
    net.save_weights(keras3_path)  # Keras 3's own layout (layers/conv2d_k/vars/i)
    images = np.random.default_rng(1).integers(0, 256, (3, KERAS_SIZE, KERAS_SIZE, 3)).astype(np.uint8)
    expected = net.predict(keras.applications.resnet50.preprocess_input(images.astype(np.float32)), verbose=0)
    return dict(path=path, keras3_path=keras3_path, images=images, expected=expected, num_params=net.count_params())


def test_keras_resnet50_parity(keras_resnet50, capsys):
    config = _model_config(keras_style=True, pretrained=keras_resnet50["path"])
    model = model_from_config(ml_collections.ConfigDict(dict(model=config, dtype="float32")), num_classes=5)
    variables = _init(model, (KERAS_SIZE, KERAS_SIZE))
    # Same architecture: Keras counts BatchNorm moving statistics as (non-trainable) parameters.
    backbone_total = sum(x.size for c in ("params", "batch_stats") for x in jax.tree.leaves(variables[c]["backbone"]))
    assert backbone_total == keras_resnet50["num_params"]
    head_before = variables["params"]["head"]
    loaded = load_pretrained(variables, config)
    report = capsys.readouterr().out
    assert "loaded 318 tensors" in report  # 53 convs x (kernel, bias) + 53 BatchNorms x 4
    assert "left at initialization: head/classifier, head/embedding" in report
    jax.tree.map(np.testing.assert_array_equal, loaded["params"]["head"], head_before)
    features = jax.jit(functools.partial(model.apply, train=False))(loaded, keras_resnet50["images"])["features"]
    expected = keras_resnet50["expected"]
    assert np.abs(expected).max() > 1.0  # a meaningful comparison, not two vectors of zeros
    np.testing.assert_allclose(np.asarray(features), expected, rtol=1e-4, atol=1e-4)
    # Keras 3's `.weights.h5` layout loads to the very same variables.
    config.pretrained = keras_resnet50["keras3_path"]
    jax.tree.map(np.testing.assert_array_equal, load_pretrained(variables, config), loaded)


def test_keras_file_needs_keras_style(keras_resnet50):
    config = _model_config(pretrained=keras_resnet50["path"])
    with pytest.raises(UserError, match=r"keras weights but config.model.keras_style=False"):
        load_pretrained({"params": {}, "batch_stats": {}}, config)


# --- torchvision layout ------------------------------------------------------------------------------------------


def torchvision_resnet_state_dict(blocks=(3, 4, 6, 3), seed=0):
    """A state dict with torchvision.models.resnet50's exact key names and shapes (Bottleneck, expansion 4).

    Written from torchvision's resnet.py, independently of msml_jax: conv weights OIHW, BatchNorm weight/bias/
    running_mean/running_var/num_batches_tracked, `downsample.0` (1x1 conv) / `downsample.1` (BN), and `fc`.
    """
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)

    def bn(name, c):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        state[f"{name}.running_mean"] = rng.normal(0, 0.5, c).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.asarray(100, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for i, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            conv(f"{p}.conv1", planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1)
            bn(f"{p}.bn3", planes * 4)
            if j == 0:
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    state["fc.weight"] = rng.normal(0, 0.01, (1000, 2048)).astype(np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state


def _ref_conv(x, w, stride, pad):
    """PyTorch's conv2d in NCHW / OIHW, by jax.lax directly."""
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )


def _ref_bn(x, state, name):
    shape = (1, -1, 1, 1)
    scale = state[f"{name}.weight"] / np.sqrt(state[f"{name}.running_var"] + 1e-5)
    mean, bias = state[f"{name}.running_mean"].reshape(shape), state[f"{name}.bias"].reshape(shape)
    return (x - mean) * scale.reshape(shape) + bias


def _ref_bottleneck(x, state, p, stride):
    """torchvision's Bottleneck.forward (stride on conv2), NCHW."""
    relu = jax.nn.relu
    y = relu(_ref_bn(_ref_conv(x, state[f"{p}.conv1.weight"], 1, 0), state, f"{p}.bn1"))
    y = relu(_ref_bn(_ref_conv(y, state[f"{p}.conv2.weight"], stride, 1), state, f"{p}.bn2"))
    y = _ref_bn(_ref_conv(y, state[f"{p}.conv3.weight"], 1, 0), state, f"{p}.bn3")
    if f"{p}.downsample.0.weight" in state:
        x = _ref_bn(_ref_conv(x, state[f"{p}.downsample.0.weight"], stride, 0), state, f"{p}.downsample.1")
    return relu(y + x)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    state = torchvision_resnet_state_dict()
    path = str(tmp_path_factory.mktemp("tv") / "resnet50.safetensors")
    write_safetensors(path, state)
    return path, state


def test_generated_state_dict_has_torchvisions_parameter_count(torchvision_file):
    # torchvision.models.resnet50(): 25,557,032 parameters (running statistics are buffers, not parameters).
    _, state = torchvision_file
    assert sum(v.size for k, v in state.items() if "running" not in k and "num_batches" not in k) == 25_557_032


def test_torchvision_resnet50_lands_where_torchvision_computes(torchvision_file, capsys):
    path, state = torchvision_file
    config = _model_config(pretrained=path)
    model = get_model("resnet50", num_classes=5, embed_dim=16)
    loaded = load_pretrained(_init(model, (32, 32)), config)
    report = capsys.readouterr().out
    assert "fc.weight, fc.bias" in report and "num_batches_tracked" in report
    assert "left at initialization: head/classifier, head/embedding" in report

    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    # Every block's output, so that a misplaced tensor anywhere is caught where it happens.
    capture = lambda m, _: bool(m.name) and m.name.startswith(("layer", "bn1"))  # noqa: E731
    outputs, inter = jax.jit(functools.partial(model.apply, train=False, capture_intermediates=capture))(loaded, images)
    inter = inter["intermediates"]["backbone"]
    to_nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)  # noqa: E731

    # Stem: torchvision's normalisation (RGB mean/std), conv1 7x7/2 pad 3, bn1, ReLU, 3x3/2 max pool pad 1.
    x = (images.astype(np.float32) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    x = jnp.asarray(x.transpose(0, 3, 1, 2), jnp.float32)
    y = _ref_bn(_ref_conv(x, state["conv1.weight"], 2, 3), state, "bn1")
    np.testing.assert_allclose(to_nchw(inter["bn1"]["__call__"][0]), y, rtol=1e-4, atol=1e-4)
    pads = [(0, 0), (0, 0), (1, 1), (1, 1)]
    y = jax.lax.reduce_window(jax.nn.relu(y), -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2), pads)
    for i, n in enumerate((3, 4, 6, 3)):
        for j in range(n):
            got = to_nchw(inter[f"layer{i + 1}_{j}"]["__call__"][0])
            # Each block from our previous block's output: errors do not compound, every block is checked.
            expected = _ref_bottleneck(y, state, f"layer{i + 1}.{j}", 2 if (i > 0 and j == 0) else 1)
            scale = float(np.abs(expected).max())
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale, err_msg=f"layer{i + 1}.{j}")
            y = jnp.asarray(got)
    np.testing.assert_allclose(outputs["features"], np.asarray(y).mean(axis=(2, 3)), rtol=1e-5, atol=1e-5)


def _write_variant(tmp_path, state, name):
    path = str(tmp_path / name)
    write_safetensors(path, state)
    return path


def test_wrong_shape_names_the_layer(torchvision_file, tmp_path):
    _, state = torchvision_file
    bad = dict(state)
    bad["layer3.1.conv2.weight"] = bad["layer3.1.conv2.weight"][:, :, :1, :1]
    path = _write_variant(tmp_path, bad, "wrong.safetensors")
    model = get_model("resnet50", num_classes=5, embed_dim=16)
    with pytest.raises(UserError, match=r"layer 'layer3\.1\.conv2\.weight'.*has shape"):
        load_pretrained(_init(model, (32, 32)), _model_config(pretrained=path))


def test_missing_layer_names_it_and_the_cli_exits_2(torchvision_file, tmp_path, capsys):
    from msml_jax.errors import exit_on_user_error

    _, state = torchvision_file
    bad = {k: v for k, v in state.items() if not k.startswith("layer2.3.bn3.")}
    path = _write_variant(tmp_path, bad, "missing.safetensors")
    model = get_model("resnet50", num_classes=5, embed_dim=16)
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        load_pretrained(_init(model, (32, 32)), _model_config(pretrained=path))
    assert exit_info.value.code == 2
    assert "the file lacks layer 'backbone/layer2_3/bn3/" in capsys.readouterr().err


def test_torchvision_file_into_another_architecture_names_the_layer(torchvision_file):
    path, _ = torchvision_file
    model = get_model("resnet18", num_classes=5, embed_dim=16)
    pattern = r"'layer1\.0\.conv1\.weight'.*\(1, 1, 64, 64\).*\(3, 3, 64, 64\) in config.model.name='resnet18'"
    with pytest.raises(UserError, match=pattern):
        load_pretrained(_init(model, (32, 32)), _model_config(name="resnet18", pretrained=path))


def test_pth_without_torch_is_a_user_error_and_with_torch_loads(torchvision_file, tmp_path):
    from msml_jax.models.pretrained import read_safetensors, read_torch

    path, state = torchvision_file
    try:
        import torch
    except ImportError:
        (tmp_path / "w.pth").write_bytes(b"not read")
        with pytest.raises(UserError, match=r"needs PyTorch.*safetensors"):
            read_torch(str(tmp_path / "w.pth"))
        return
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, tmp_path / "w.pth")
    got = read_torch(str(tmp_path / "w.pth"))
    for k, v in read_safetensors(path).items():
        np.testing.assert_array_equal(got[k], v)


def test_safetensors_reader_matches_the_format_by_hand(tmp_path):
    # Built by hand from the format: 8-byte little-endian header size, JSON header, raw little-endian data.
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.array([1, -2], dtype="<i8")
    header = {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}, "__metadata__": {"format": "pt"}}
    import json

    blob = json.dumps(header).encode()
    (tmp_path / "x.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob + a.tobytes() + b.tobytes())
    from msml_jax.models.pretrained import read_safetensors

    got = read_safetensors(str(tmp_path / "x.safetensors"))
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], b)


# ---------------------------------------------------------------------------------------- BN-Inception, ResNet50-X

BNINCEPTION_PIXELS = dict(pixel_mean=(104.0, 117.0, 128.0), pixel_std=(1.0, 1.0, 1.0), channel_order="bgr")


def bninception_state_dict(seed=0):
    """A state dict in pretrainedmodels' bn_inception layout, shapes taken from our Flax model's parameters.

    Names follow pretrainedmodels/models/bninception.py: `<conv>.weight` OIHW with a `<conv>.bias` (Caffe convs
    have biases), `<conv>_bn.{weight,bias,running_mean,running_var}`, `last_linear.{weight,bias}` (1000 x 1024);
    <conv> is `inception_3a_double_3x3_1` for our `inception_3a/double_3x3_1`.
    """
    model = get_model("inception_v2", num_classes=5, embed_dim=8)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3), jnp.uint8))
    rng = np.random.default_rng(seed)
    state = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes["params"]["backbone"])[0]:
        names = [p.key for p in path]
        if names[-2:] != ["conv", "kernel"]:
            continue
        torch_name = "_".join(names[:-2])  # inception_3a + double_3x3_1
        h, w, cin, cout = leaf.shape
        std = np.sqrt(2.0 / (cin * h * w))
        state[f"{torch_name}.weight"] = rng.normal(0, std, (cout, cin, h, w)).astype(np.float32)
        state[f"{torch_name}.bias"] = rng.normal(0, 0.2, cout).astype(np.float32)
        state[f"{torch_name}_bn.weight"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        state[f"{torch_name}_bn.bias"] = rng.normal(0, 0.1, cout).astype(np.float32)
        state[f"{torch_name}_bn.running_mean"] = rng.normal(0, 0.5, cout).astype(np.float32)
        state[f"{torch_name}_bn.running_var"] = rng.uniform(0.5, 2.0, cout).astype(np.float32)
    state["last_linear.weight"] = rng.normal(0, 0.01, (1000, 1024)).astype(np.float32)
    state["last_linear.bias"] = np.zeros(1000, np.float32)
    return state


def _np_conv_bn_relu(x, state, name, stride):
    """PyTorch's conv2d (+bias, padding k // 2) -> BatchNorm2d(eps 1e-5, running stats) -> ReLU, numpy, NCHW."""
    w, b = state[f"{name}.weight"].astype(np.float64), state[f"{name}.bias"].astype(np.float64)
    k = w.shape[-1]
    x = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    ho, wo = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    y = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(k):
        for j in range(k):
            y += np.einsum("nchw,oc->nohw", x[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride],
                           w[:, :, i, j])
    y += b[None, :, None, None]
    bn = {leaf: state[f"{name}_bn.{leaf}"].astype(np.float64)[None, :, None, None]
          for leaf in ("weight", "bias", "running_mean", "running_var")}
    y = (y - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-5) * bn["weight"] + bn["bias"]
    return np.maximum(y, 0)


@pytest.fixture(scope="module")
def bninception_file(tmp_path_factory):
    state = bninception_state_dict()
    path = str(tmp_path_factory.mktemp("bninception") / "bn_inception.safetensors")
    write_safetensors(path, state)
    return path, state


def test_bninception_state_dict_has_the_published_layout(bninception_file):
    _, state = bninception_file
    # Shapes of pretrainedmodels' bn_inception, from its bninception.py (in, out channels of the Caffe model).
    expected = {"conv1_7x7_s2.weight": (64, 3, 7, 7), "conv2_3x3.weight": (192, 64, 3, 3),
                "inception_3a_1x1.weight": (64, 192, 1, 1), "inception_3c_3x3.weight": (160, 128, 3, 3),
                "inception_4e_double_3x3_2.weight": (256, 256, 3, 3),
                "inception_5b_pool_proj.weight": (128, 1024, 1, 1),
                "inception_5b_1x1_bn.running_var": (352,), "last_linear.weight": (1000, 1024)}
    assert {k: state[k].shape for k in expected} == expected
    assert sum(k.endswith(".weight") and state[k].ndim == 4 for k in state) == 69  # 3 stem + 66 module convs


def test_bninception_layers_compute_what_pytorch_computes(bninception_file, capsys):
    path, state = bninception_file
    model = get_model("inception_v2", num_classes=5, embed_dim=8, **BNINCEPTION_PIXELS)
    loaded = load_pretrained(_init(model, (32, 32)), _model_config(name="inception_v2", pretrained=path,
                                                                   preprocessing="bninception"))
    report = capsys.readouterr().out
    assert "bninception weights" in report and "last_linear.weight, last_linear.bias" in report
    assert "left at initialization: head/classifier, head/embedding" in report

    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    capture = lambda m, _: m.name in ("conv1_7x7_s2", "3x3_reduce", "3x3")  # noqa: E731
    _, inter = model.apply(loaded, images, train=False, capture_intermediates=capture)
    inter = inter["intermediates"]["backbone"]
    to_nchw = lambda a: np.asarray(a, np.float64).transpose(0, 3, 1, 2)  # noqa: E731
    # The stem from the raw pixels: BGR, 0..255, minus [104, 117, 128] (pretrainedmodels' mean, std 1).
    x = (images[..., ::-1].astype(np.float64) - np.array([104.0, 117.0, 128.0])).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(to_nchw(inter["conv1_7x7_s2"]["__call__"][0]),
                               _np_conv_bn_relu(x, state, "conv1_7x7_s2", 2), rtol=1e-4, atol=1e-3)
    # A stride-2 branch deep inside: inception_3c's 3x3 from its own 3x3_reduce output.
    x = to_nchw(inter["inception_3c"]["3x3_reduce"]["__call__"][0])
    np.testing.assert_allclose(to_nchw(inter["inception_3c"]["3x3"]["__call__"][0]),
                               _np_conv_bn_relu(x, state, "inception_3c_3x3", 2), rtol=1e-4, atol=1e-4)


def test_bninception_weights_need_their_preprocessing(bninception_file):
    path, _ = bninception_file
    model = get_model("inception_v2", num_classes=5, embed_dim=8)
    with pytest.raises(UserError, match=r"preprocessing='auto'.*set it to 'bninception'"):
        load_pretrained(_init(model, (32, 32)), _model_config(name="inception_v2", pretrained=path))


def test_bninception_file_trains_through_the_loop(bninception_file, tmp_path):
    from msml_jax.training.loop import train_and_evaluate
    from msml_jax.training.trainer import create_trainer
    from tests.conftest import make_tiny_config

    path, state = bninception_file
    config = make_tiny_config()
    config.model.name, config.data.image_size = "inception_v2", (32, 32)
    config.model.pretrained, config.model.preprocessing = path, "bninception"
    config.num_train_steps, config.lr_boundaries = 1, ()
    trainer = create_trainer(config)
    assert tuple(trainer.model.pixel_mean) == (104.0, 117.0, 128.0) and trainer.model.channel_order == "bgr"
    np.testing.assert_array_equal(trainer.state.params["backbone"]["inception_4a"]["1x1"]["conv"]["kernel"],
                                  state["inception_4a_1x1.weight"].transpose(2, 3, 1, 0))
    train_and_evaluate(config, str(tmp_path / "run"), evaluate=False, tensorboard=False)
    import json

    logged = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert logged[-1]["step"] == 1 and np.isfinite(logged[-1]["loss"])


def test_resnet50x_loads_what_fits_of_a_resnet50_file(torchvision_file, capsys):
    path, state = torchvision_file
    model = get_model("resnet50x", num_classes=5, embed_dim=16)
    fresh = _init(model, (32, 32))
    loaded = load_pretrained(fresh, _model_config(name="resnet50x", pretrained=path))
    report = capsys.readouterr().out
    # The 16 depthwise 3x3 kernels differ in shape (groups = channels) and stay at initialization, named.
    assert "16 tensors" in report and "layer1_0/conv2/kernel (3, 3, 1, 64) (file (3, 3, 64, 64))" in report
    backbone, init = loaded["params"]["backbone"], fresh["params"]["backbone"]
    np.testing.assert_array_equal(backbone["layer3_2"]["conv2"]["kernel"], init["layer3_2"]["conv2"]["kernel"])
    np.testing.assert_array_equal(backbone["layer3_2"]["conv1"]["kernel"],
                                  state["layer3.2.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(loaded["batch_stats"]["backbone"]["layer3_2"]["bn2"]["mean"],
                                  state["layer3.2.bn2.running_mean"])
