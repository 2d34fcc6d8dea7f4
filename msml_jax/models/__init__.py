"""Re-ID models: a registered backbone (`registry.BACKBONES`) and the embedding head, built by name with `get_model`."""

import functools
import importlib
import pkgutil
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from msml_jax.models.heads import EmbeddingHead
from msml_jax.models.registry import BACKBONES, get_backbone, register_backbone  # noqa: F401  (the registry)

# ImageNet statistics in RGB, on the 0..255 scale (torchvision's preprocessing).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# Keras "caffe" preprocessing (keras.applications.resnet50.preprocess_input): RGB -> BGR, minus the BGR mean.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# name -> (pixel_mean, pixel_std, channel_order) of the weights' origin.
PREPROCESSING = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD, "rgb"),
    "caffe": (CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), "bgr"),
    # pretrainedmodels' BN-Inception: BGR, 0..255 minus the per-channel mean, no scaling
    "bninception": ((104.0, 117.0, 128.0), (1.0, 1.0, 1.0), "bgr"),
}

class ReidModel(nn.Module):
    """uint8 or float images [B, H, W, 3] (RGB, 0..255) -> dict of features, embeddings, logits (see EmbeddingHead).

    Normalises pixels itself, x = (image[..., order] - pixel_mean) / pixel_std with order RGB or BGR
    (`channel_order`, the order `pixel_mean`/`pixel_std` are given in), so a checkpoint carries its own
    preprocessing.
    """

    backbone: nn.Module
    num_classes: int
    embed_dim: int = 1024
    pixel_mean: Sequence[float] = IMAGENET_MEAN
    pixel_std: Sequence[float] = IMAGENET_STD
    channel_order: str = "rgb"
    bnneck: bool = False
    dropout: float = 0.0
    eval_embedding: str = "embedding"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = images.astype(jnp.float32)
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        x = (x - jnp.asarray(self.pixel_mean, jnp.float32)) / jnp.asarray(self.pixel_std, jnp.float32)
        feature_map = self.backbone(x.astype(self.dtype), train=train)
        head = EmbeddingHead(
            self.num_classes,
            self.embed_dim,
            bnneck=self.bnneck,
            dropout=self.dropout,
            eval_embedding=self.eval_embedding,
            name="head",
        )
        return head(feature_map, train=train)


def get_model(
    name,
    num_classes,
    embed_dim=1024,
    dtype="float32",
    last_stride=2,
    keras_style=False,
    preprocessing=None,
    **options,
):
    """Builds a re-ID model by backbone name.

    Args:
      name: a registered backbone (`registry.BACKBONES`).
      num_classes: training identities (classifier outputs).
      embed_dim: size of the metric embedding (the paper uses 1024).
      dtype: compute dtype, "float32" or "bfloat16" (parameters, BatchNorm statistics and outputs stay float32).
      last_stride: stride of the backbone's last stage (1 or 2).
      keras_style: ResNet laid out as keras.applications (stride on the first 1x1, conv biases, BN eps 1.001e-5).
      preprocessing: "imagenet" (torchvision: RGB mean/std), "caffe" (Keras: BGR mean subtraction), "bninception"
        (pretrainedmodels BN-Inception: BGR minus its mean), or
        None / "auto": "caffe" with keras_style, else "imagenet". Sets pixel_mean/pixel_std/channel_order
        (those given explicitly in **options win).
      **options: other ReidModel fields (bnneck, dropout, eval_embedding, pixel_mean, pixel_std, channel_order).
    Returns:
      a ReidModel; `model.apply(variables, images, train=...)` returns a dict with `features`, `embeddings`,
      `logits` (and `bnneck`, `retrieval` with those options).
    """
    if preprocessing in (None, "", "auto"):
        preprocessing = "caffe" if keras_style else "imagenet"
    mean, std, order = PREPROCESSING[preprocessing]
    options = {"pixel_mean": mean, "pixel_std": std, "channel_order": order, **options}
    compute_dtype = jnp.dtype(dtype)
    backbone = get_backbone(name).build(dtype=compute_dtype, last_stride=last_stride, keras_style=keras_style)
    return ReidModel(backbone=backbone, num_classes=num_classes, embed_dim=embed_dim, dtype=compute_dtype, **options)


def init_variables(model, image_shape, key):
    """Random initial variables ({"params", "batch_stats"}) for images of `image_shape` (h, w); "batch_stats" is
    empty for a model without BatchNorm."""
    images = jnp.zeros((2, *image_shape, 3), jnp.uint8)
    variables = jax.jit(functools.partial(model.init, train=False))(key, images)
    return {"batch_stats": {}, **variables}


def model_from_config(config, num_classes):
    """The model of a run's config (`config.model` and `config.dtype`); absent new fields take their defaults."""
    m = config.model
    return get_model(
        m.name,
        num_classes,
        embed_dim=m.embed_dim,
        dtype=config.dtype,
        last_stride=m.last_stride,
        keras_style=bool(m.get("keras_style", False)),
        preprocessing=m.get("preprocessing", "auto"),
        bnneck=bool(m.get("bnneck", False)),
        dropout=float(m.get("dropout", 0.0)),
        eval_embedding=m.get("eval_embedding", "embedding"),
    )


# Every module of this package is imported with it: the backbone modules register themselves (registry.py).
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
from msml_jax.models.pretrained import load_pretrained  # noqa: E402,F401  (re-export)
