"""Re-ID models: a backbone and the embedding head, built by name with `get_model`."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from msml_jax.errors import UserError
from msml_jax.models import resnet
from msml_jax.models.heads import EmbeddingHead

# ImageNet statistics in RGB, on the 0..255 scale (torchvision's preprocessing).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

BACKBONES = {
    "small_resnet": resnet.small_resnet,
    "resnet18": resnet.resnet18,
}


class ReidModel(nn.Module):
    """uint8 or float images [B, H, W, 3] (RGB, 0..255) -> dict of features, embeddings, logits.

    Normalises pixels with `pixel_mean` / `pixel_std` itself, so a checkpoint
    carries its own preprocessing.
    """

    backbone: nn.Module
    num_classes: int
    embed_dim: int = 1024
    pixel_mean: Sequence[float] = IMAGENET_MEAN
    pixel_std: Sequence[float] = IMAGENET_STD
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = (images.astype(jnp.float32) - jnp.asarray(self.pixel_mean)) / jnp.asarray(self.pixel_std)
        feature_map = self.backbone(x.astype(self.dtype), train=train)
        return EmbeddingHead(self.num_classes, self.embed_dim, name="head")(feature_map)


def get_model(name, num_classes, embed_dim=1024, dtype="float32", last_stride=2, **options):
    """Builds a re-ID model by backbone name.

    Args:
      name: one of BACKBONES.
      num_classes: training identities (classifier outputs).
      embed_dim: size of the metric embedding (the paper uses 1024).
      dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32).
      last_stride: stride of the backbone's last stage.
      **options: ReidModel fields (pixel_mean, pixel_std).
    Returns:
      a ReidModel; `model.apply(variables, images, train=...)` returns a dict with
      `features`, `embeddings` and `logits`.
    """
    if name not in BACKBONES:
        raise UserError(f"unknown model {name!r} in config.model.name: valid names are {', '.join(sorted(BACKBONES))}")
    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"config.dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    compute_dtype = jnp.dtype(dtype)
    backbone = BACKBONES[name](dtype=compute_dtype, last_stride=last_stride)
    return ReidModel(backbone=backbone, num_classes=num_classes, embed_dim=embed_dim, dtype=compute_dtype, **options)
