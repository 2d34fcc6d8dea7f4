"""ImageNet weights from a file onto a backbone: torchvision ResNet state dicts, Keras ResNet50 `.h5` files and
the BN-Inception state dict of Cadene's `pretrainedmodels` (`bn_inception`, the widely used Inception-v2 port).

Formats:
  - `.safetensors`: a torchvision state dict, parsed here with numpy (8-byte little-endian header length,
    JSON header {name: {dtype, shape, data_offsets}}, raw little-endian data); no torch needed.
  - `.pth` / `.pt`: a torchvision state dict read with torch (only when torch is installed).
  - `.h5`: keras.applications.ResNet50 weights, in the legacy Keras 2 HDF5 layout of the published ImageNet
    files (root attribute `layer_names`, one group per layer with attribute `weight_names`) or in Keras 3's
    `.weights.h5` layout (`layers/<layer>/vars/<i>`); read with h5py.

Layouts: torchvision convolution kernels are OIHW and are transposed to Flax's HWIO; BatchNorm weight/bias/
running_mean/running_var become scale/bias/mean/var. Keras kernels are already HWIO; gamma/beta/moving_mean/
moving_variance become scale/bias/mean/var. Keras's `conv{s}_block{b}_{i}_{conv|bn}` becomes
`layer{s-1}_{b-1}/conv{i}` (i = 0, the shortcut, becomes `downsample_conv` / `downsample_bn`).

BN-Inception (`pretrainedmodels.bninception`, a `.pth` or its `.safetensors` conversion): keys `<conv>.weight`
(OIHW -> HWIO), `<conv>.bias`, `<conv>_bn.{weight,bias,running_mean,running_var}` and `last_linear`, where <conv>
is conv1_7x7_s2, conv2_3x3_reduce, conv2_3x3 or inception_<module>_<branch> (branch 1x1, 3x3_reduce, 3x3,
double_3x3_reduce, double_3x3_1, double_3x3_2, pool_proj), which become `<conv>/conv` and `<conv>/bn`
(inception_<module>/<branch>/...). The Caffe port's convolution biases sit right before a BatchNorm, so each is
folded into that BatchNorm's running mean (mean - bias): the same function in evaluation, and the same in training,
where the batch mean absorbs any bias. Those weights expect BGR, 0..255 input minus the mean [104, 117, 128]
(`config.model.preprocessing='bninception'`).

ResNet50-X (`resnet50x`): its depthwise 3x3 convolutions have no published ImageNet weights. Start it from scratch
(`config.model.pretrained=''`), or from a torchvision ResNet50 file: every tensor whose name and shape match (the
stem, the 1x1 convolutions, every BatchNorm, the shortcuts) is loaded and the depthwise kernels, whose shapes
differ, stay at their initialization; the report lists them.

Every backbone variable must come from the file with its exact shape (ResNet50-X from a ResNet50 file excepted);
the classifier of the weights (`fc`, `predictions`, `last_linear`) and PyTorch's `num_batches_tracked` are
reported as not used; the head stays at its initialization. Anything else raises a UserError naming the layer.
"""

import json
import os
import re

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from msml_jax.errors import UserError
from msml_jax.models.registry import BACKBONES

_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
_TORCH_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_KERAS_BN = {"gamma": "scale", "beta": "bias", "moving_mean": "mean", "moving_variance": "var"}
_KERAS_LAYER = re.compile(r"^conv(\d)_block(\d+)_(\d)_(conv|bn)$")


def read_safetensors(path):
    """{name: np.ndarray} of a `.safetensors` file (bf16 tensors are widened to float32)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise UserError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a safetensors file (header is not JSON: {e})") from None
    body = memoryview(data)[8 + n :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = body[start:end]
        if info["dtype"] == "BF16":
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, _SAFETENSORS_DTYPES[info["dtype"]])
        else:
            raise UserError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        tensors[name] = array.reshape(info["shape"]).copy()
    return tensors


def write_safetensors(path, tensors):
    """Writes {name: np.ndarray} as `.safetensors` (float32/float64/int arrays; used by tests and converters)."""
    inverse = {np.dtype(v).str: k for k, v in _SAFETENSORS_DTYPES.items()}
    header, offset, chunks = {}, 0, []
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": inverse[array.dtype.newbyteorder("<").str], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob + b"".join(chunks))


def read_torch(path):
    """{name: np.ndarray} of a `.pth` state dict, read with torch (CPU, weights only)."""
    try:
        import torch  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise UserError(
            f"config.model.pretrained={path!r}: reading a .pth file needs PyTorch, which is not installed; "
            "install torch or convert the state dict to .safetensors "
            "(safetensors.torch.save_file(torch.load(path), 'weights.safetensors'))"
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_keras_h5(path):
    """{"layer/weight": np.ndarray} of a Keras ResNet weights file (legacy Keras 2 or Keras 3 layout)."""
    import h5py  # noqa: PLC0415  (h5py comes with the data dependencies; only needed for .h5)

    weights = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f  # a full-model save nests the weights
        if "layer_names" in root.attrs:  # legacy layout: the published ImageNet files
            for layer in root.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                group = root[layer]
                for wname in group.attrs["weight_names"]:
                    wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                    short = wname.split("/")[-1].split(":")[0]
                    weights[f"{layer}/{short}"] = np.asarray(group[wname])
        elif "layers" in root:  # Keras 3 `.weights.h5`
            weights = _keras3_weights(root["layers"], path)
        else:
            raise UserError(f"{path}: not a Keras weights file (neither 'layer_names' nor 'layers' at its root)")
    return weights


def _keras_resnet_layer_order(num_convs):
    """Keras ResNet50/101 layer name stems in `model.layers` order (shortcut `_0` after `_2` in first blocks)."""
    stages = {53: (3, 4, 6, 3), 104: (3, 4, 23, 3)}.get(num_convs)
    if stages is None:
        return None
    order = ["conv1"]
    for s, n in enumerate(stages, start=2):
        for b in range(1, n + 1):
            order += [f"conv{s}_block{b}_{i}" for i in ((1, 2, 0, 3) if b == 1 else (1, 2, 3))]
    return order


def _keras3_weights(layers, path):
    """{"layer/weight": array} of Keras 3's layout: layers/<conv2d_k | batch_normalization_k>/vars/<i>.

    Keras 3 names each layer's group by class and its rank among the model's layers of that class (conv2d,
    conv2d_1, ...), in `model.layers` order; the Keras ResNet's names are recovered from that order.
    """

    def rank(name, prefix):
        m = re.fullmatch(prefix + r"(?:_(\d+))?", name)
        return None if m is None else int(m[1] or 0)

    groups = {"conv": {}, "bn": {}}
    for name, group in layers.items():
        if "vars" not in group or not len(group["vars"]):
            continue
        for kind, prefix in (("conv", "conv2d"), ("bn", "batch_normalization")):
            k = rank(name, prefix)
            if k is not None:
                groups[kind][k] = group["vars"]
                break
        else:
            groups.setdefault("other", {})[name] = group["vars"]
    order = _keras_resnet_layer_order(len(groups["conv"]))
    if order is None or sorted(groups["conv"]) != list(range(len(order))) or len(groups["bn"]) != len(order):
        raise UserError(
            f"config.model.pretrained={path!r}: a Keras 3 weights file of {len(groups['conv'])} convolutions is not "
            "a keras.applications ResNet50/ResNet101"
        )
    names = {"conv": ("kernel", "bias"), "bn": ("gamma", "beta", "moving_mean", "moving_variance")}
    weights = {}
    for kind in ("conv", "bn"):
        for k, variables in groups[kind].items():
            for i in sorted(variables, key=int):
                weights[f"{order[k]}_{kind}/{names[kind][int(i)]}"] = np.asarray(variables[i])
    for name, variables in groups.get("other", {}).items():
        for i in variables:
            weights[f"{name}/{i}"] = np.asarray(variables[i])
    return weights


def torchvision_to_flax(state):
    """torchvision state dict -> ({flax variable path: array}, [unused names], {flax path: name in the file})."""
    mapped, unused, sources = {}, [], {}
    for name, value in state.items():
        parts = name.split(".")
        if parts[0] == "fc" or parts[-1] == "num_batches_tracked":
            unused.append(name)
            continue
        module, leaf = parts[:-1], parts[-1]
        path = []
        i = 0
        while i < len(module):
            if module[i].startswith("layer") and i + 1 < len(module) and module[i + 1].isdigit():
                path.append(f"{module[i]}_{module[i + 1]}")
                i += 2
            elif module[i] == "downsample" and i + 1 < len(module):
                sub = {"0": "downsample_conv", "1": "downsample_bn"}.get(module[i + 1], f"downsample_{module[i + 1]}")
                path.append(sub)
                i += 2
            else:
                path.append(module[i])
                i += 1
        value = np.asarray(value, np.float32)
        if leaf == "weight" and value.ndim == 4:  # convolution OIHW -> HWIO
            key, value = ("params", "backbone", *path, "kernel"), value.transpose(2, 3, 1, 0)
        elif leaf == "bias" and not path[-1].startswith(("bn", "downsample_bn")):
            key = ("params", "backbone", *path, "bias")
        elif leaf in _TORCH_BN:
            collection = "batch_stats" if leaf.startswith("running") else "params"
            key = (collection, "backbone", *path, _TORCH_BN[leaf])
        else:
            key = ("params", "backbone", *path, leaf)
        mapped[key], sources[key] = value, name
    return mapped, unused, sources


def keras_to_flax(weights):
    """Keras ResNet weights {"layer/weight": array} -> ({flax variable path: array}, [unused names], {path: name})."""
    mapped, unused, sources = {}, [], {}
    for name, value in weights.items():
        layer, leaf = name.split("/")
        if layer in ("conv1_conv", "conv1_bn"):
            path = ("conv1" if layer == "conv1_conv" else "bn1",)
            kind = layer.split("_")[-1]
        elif m := _KERAS_LAYER.match(layer):
            stage, block, index, kind = int(m[1]), int(m[2]), int(m[3]), m[4]
            sub = f"downsample_{kind}" if index == 0 else f"{kind}{index}"
            path = (f"layer{stage - 1}_{block - 1}", sub)
        else:  # the ImageNet classifier ("predictions", "probs") and anything not a backbone layer
            unused.append(name)
            continue
        if kind == "bn" and leaf in _KERAS_BN:
            collection = "batch_stats" if leaf.startswith("moving") else "params"
            key = (collection, "backbone", *path, _KERAS_BN[leaf])
        else:
            key = ("params", "backbone", *path, leaf)
        mapped[key], sources[key] = np.asarray(value, np.float32), name
    return mapped, unused, sources


def is_bninception(state):
    """Whether a state dict is laid out as pretrainedmodels' bn_inception."""
    return "conv1_7x7_s2.weight" in state and "conv1_7x7_s2_bn.running_mean" in state


def _bninception_path(module):
    """'inception_3a_double_3x3_1' -> ('inception_3a', 'double_3x3_1'); 'conv2_3x3' -> ('conv2_3x3',)."""
    if module.startswith("inception_"):
        block, _, branch = module[len("inception_"):].partition("_")
        return (f"inception_{block}", branch)
    return (module,)


def bninception_to_flax(state):
    """pretrainedmodels bn_inception state dict -> ({flax variable path: array}, [unused names], {path: name}).

    Convolution biases are folded into the next BatchNorm's running mean (BN(Wx + b) with mean m equals BN(Wx)
    with mean m - b); a bias with no BatchNorm after it maps to a variable the backbone lacks, a UserError later.
    """
    mapped, unused, sources = {}, [], {}
    biases = {name[: -len(".bias")]: value for name, value in state.items()
              if name.endswith(".bias") and f"{name[: -len('.bias')]}_bn.running_mean" in state}
    for name, value in state.items():
        module, _, leaf = name.rpartition(".")
        if module == "last_linear" or leaf == "num_batches_tracked":
            unused.append(name)
            continue
        value = np.asarray(value, np.float32)
        if module.endswith("_bn") and leaf in _TORCH_BN:
            conv = module[: -len("_bn")]
            collection = "batch_stats" if leaf.startswith("running") else "params"
            key = (collection, "backbone", *_bninception_path(conv), "bn", _TORCH_BN[leaf])
            if leaf == "running_mean" and conv in biases:
                value = value - np.asarray(biases[conv], np.float32)
                name = f"{name} - {conv}.bias"
        elif leaf == "weight" and value.ndim == 4:
            key = ("params", "backbone", *_bninception_path(module), "conv", "kernel")
            value = value.transpose(2, 3, 1, 0)
        elif leaf == "bias" and module in biases:
            continue  # folded into the BatchNorm's mean above
        else:
            key = ("params", "backbone", *_bninception_path(module), leaf)
        mapped[key], sources[key] = value, name
    return mapped, unused, sources


def _layer(path):
    return "/".join(path[1:])


def load_pretrained(variables, model_config, log=print):
    """Initial variables with ImageNet weights from `model_config.pretrained` when it names a file.

    Args:
      variables: fresh random variables {"params": ..., "batch_stats": ...} of the configured model.
      model_config: `config.model` (pretrained, name, keras_style, preprocessing).
      log: where the report goes (one line per item).
    Returns:
      variables with every backbone variable replaced by the file's (float32); the head untouched.
    Raises:
      UserError naming the file and the layer when the file lacks a backbone variable, holds a layer the
      backbone lacks, or a shape differs; or when the file's origin does not match keras_style/preprocessing.
    """
    path = model_config.get("pretrained", "")
    if not path:
        return variables
    if not os.path.isfile(path):
        raise UserError(f"config.model.pretrained={path!r}: no such file")
    keras_style = bool(model_config.get("keras_style", False))
    preprocessing = model_config.get("preprocessing", "auto") or "auto"
    ext = os.path.splitext(path)[1].lower()
    if ext == ".h5":
        origin, expected_pre = "keras", "caffe"
        mapped, unused, sources = keras_to_flax(read_keras_h5(path))
    elif ext in (".safetensors", ".pth", ".pt"):
        state = read_safetensors(path) if ext == ".safetensors" else read_torch(path)
        if is_bninception(state):
            origin, expected_pre = "bninception", "bninception"
            mapped, unused, sources = bninception_to_flax(state)
        else:
            origin, expected_pre = "torchvision", "imagenet"
            mapped, unused, sources = torchvision_to_flax(state)
    else:
        raise UserError(
            f"config.model.pretrained={path!r}: unknown weights format {ext!r} (use .h5, .safetensors or .pth)"
        )
    if keras_style != (origin == "keras"):
        raise UserError(
            f"config.model.pretrained={path!r} holds {origin} weights but config.model.keras_style={keras_style}: "
            f"set config.model.keras_style={origin == 'keras'}"
        )
    if origin == "bninception" and preprocessing != expected_pre:  # "auto" means imagenet for every torch file
        raise UserError(
            f"config.model.pretrained={path!r} holds the BN-Inception weights of pretrainedmodels, trained on BGR "
            f"0..255 images minus [104, 117, 128], but config.model.preprocessing={preprocessing!r}: set it to "
            "'bninception'"
        )
    if preprocessing not in ("auto", expected_pre):
        raise UserError(
            f"config.model.pretrained={path!r} holds {origin} weights, trained with {expected_pre!r} preprocessing, "
            f"but config.model.preprocessing={preprocessing!r}: set it to 'auto' or {expected_pre!r}"
        )

    flat = traverse_util.flatten_dict({k: variables[k] for k in ("params", "batch_stats") if k in variables})
    name = model_config.get("name", "?")
    # Backbones that load what fits of another architecture's file declare it (registry.Backbone.partial_weights).
    partial = BACKBONES[name].partial_weights.get(origin) if name in BACKBONES else None
    skipped = []  # (key, shape in the file) of a partial load's tensors that do not fit
    for key, value in list(mapped.items()):
        if key not in flat:
            raise UserError(
                f"config.model.pretrained={path!r}: layer {sources[key]!r} of the file (backbone variable "
                f"{_layer(key)!r}) has no counterpart in "
                f"config.model.name={name!r} (keras_style={keras_style}); is this the right architecture?"
            )
        if tuple(flat[key].shape) != value.shape and partial:
            skipped.append((key, value.shape))
            del mapped[key]
            continue
        if tuple(flat[key].shape) != value.shape:
            raise UserError(
                f"config.model.pretrained={path!r}: layer {sources[key]!r} (backbone variable {_layer(key)!r}) has "
                f"shape {value.shape} in the file but {tuple(flat[key].shape)} in config.model.name={name!r} "
                "(shapes in Flax's layout: convolution kernels HWIO)"
            )
        if not np.isfinite(value).all():
            raise UserError(f"config.model.pretrained={path!r}: layer {sources[key]!r} holds NaN or infinite values")
    missing = [k for k in flat if k[1] == "backbone" and k not in mapped and k not in dict(skipped)]
    if missing:
        raise UserError(
            f"config.model.pretrained={path!r}: the file lacks layer {_layer(missing[0])!r} of config.model.name="
            f"{name!r} ({len(missing)} backbone variables missing in all)"
        )
    out = dict(flat)
    for key, value in mapped.items():
        out[key] = jnp.asarray(value, flat[key].dtype)
    left = sorted({"/".join(k[1:-1]) for k in flat if k[1] != "backbone"})
    num_values = sum(int(v.size) for v in mapped.values())
    log(f"pretrained: loaded {len(mapped)} tensors ({num_values:,} values) of {origin} weights from {path} "
        f"into the backbone of {name}")
    log(f"pretrained: not used from the file ({len(unused)}): {', '.join(unused) if unused else 'nothing'}")
    if skipped:
        log(f"pretrained: left at initialization in the backbone of {name} ({partial}; {len(skipped)} tensors): "
            + ", ".join(f"{_layer(k)} {tuple(flat[k].shape)} (file {shape})" for k, shape in skipped))
    log(f"pretrained: left at initialization: {', '.join(left) if left else 'nothing'}")
    result = traverse_util.unflatten_dict(out)
    return {**variables, **result}
