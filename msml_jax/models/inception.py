"""Inception-v2 = BN-Inception (Ioffe & Szegedy 2015, "Batch Normalization", architecture table of the appendix).

Layout of the widely used "bninception" port (Caffe model of the paper, as in Cadene's pretrainedmodels):
every convolution is followed by BatchNorm (epsilon 1e-5) and ReLU; max pools are 3x3/2 with ceil mode;
the inception modules have four branches concatenated in this order: 1x1, 1x1 -> 3x3, 1x1 -> 3x3 -> 3x3
("double 3x3"), pool -> 1x1 projection; the stride-2 modules (3c, 4e) drop the 1x1 branch and pass the
max-pooled input through. Input 224x224 -> feature map [B, 7, 7, 1024].

`INCEPTION_V2_MODULES` holds the table: (name, #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3,
pool type, pool projection, stride). Pool projection 0 means "pass through".
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from msml_jax.models.registry import register_backbone

INCEPTION_V2_MODULES = (
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),
)


def max_pool_ceil(x, window=3, stride=2):
    """Max pooling [B, H, W, C] with PyTorch's/Caffe's ceil mode: out = ceil((n - window) / stride) + 1."""
    pads = []
    for n in x.shape[1:3]:
        out = math.ceil((n - window) / stride) + 1
        pads.append((0, max(0, (out - 1) * stride + window - n)))
    return nn.max_pool(x, (window, window), (stride, stride), padding=tuple(pads))


class ConvBN(nn.Module):
    """Convolution -> BatchNorm -> ReLU."""

    features: int
    kernel: int = 1
    strides: int = 1
    norm: Any = nn.BatchNorm
    use_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = self.kernel // 2
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            (self.strides, self.strides),
            padding=((p, p), (p, p)),
            use_bias=self.use_bias,
            dtype=self.dtype,
            name="conv",
        )(x)
        return nn.relu(self.norm(name="bn")(x))


class InceptionModule(nn.Module):
    """One row of the table; output channels #1x1 + #3x3 + double #3x3 + (projection or input channels)."""

    n1x1: int
    n3x3red: int
    n3x3: int
    nd3x3red: int
    nd3x3: int
    pool: str
    proj: int
    strides: int
    conv: Any

    @nn.compact
    def __call__(self, x):
        branches = []
        if self.n1x1:
            branches.append(self.conv(self.n1x1, name="1x1")(x))
        y = self.conv(self.n3x3red, name="3x3_reduce")(x)
        branches.append(self.conv(self.n3x3, 3, self.strides, name="3x3")(y))
        y = self.conv(self.nd3x3red, name="double_3x3_reduce")(x)
        y = self.conv(self.nd3x3, 3, name="double_3x3_1")(y)
        branches.append(self.conv(self.nd3x3, 3, self.strides, name="double_3x3_2")(y))
        if self.strides == 2:
            y = max_pool_ceil(x)
        elif self.pool == "avg":
            # count_include_pad=True, as the Caffe model: zero padding counts in the mean.
            y = nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=True)
        else:
            y = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
        branches.append(self.conv(self.proj, name="pool_proj")(y) if self.proj else y)
        return jnp.concatenate(branches, axis=-1)


class BNInception(nn.Module):
    """BN-Inception feature extractor: [B, H, W, 3] -> [B, H/32, W/32, 1024] (224 -> 7).

    Attributes:
      last_stride: 1 drops the stride of module 4e (the last downsampling), a common re-ID choice.
      use_bias: convolution biases (the Caffe port has them; redundant before BatchNorm).
    """

    last_stride: int = 2
    use_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        conv = functools.partial(ConvBN, norm=norm, use_bias=self.use_bias, dtype=self.dtype)
        x = conv(64, 7, 2, name="conv1_7x7_s2")(x)
        x = max_pool_ceil(x)
        x = conv(64, 1, name="conv2_3x3_reduce")(x)
        x = conv(192, 3, name="conv2_3x3")(x)
        x = max_pool_ceil(x)
        for name, n1, n3r, n3, nd3r, nd3, pool, proj, strides in INCEPTION_V2_MODULES:
            if name == "4e":
                strides = self.last_stride
            x = InceptionModule(n1, n3r, n3, nd3r, nd3, pool, proj, strides, conv, name=f"inception_{name}")(x)
        return x


@register_backbone("inception_v2", stride=32)
def inception_v2(dtype=jnp.float32, last_stride=2, keras_style=False):
    """BN-Inception (the paper's "Inception-v2"); `keras_style` is not applicable (no Keras model)."""
    del keras_style
    return BNInception(last_stride=last_stride, dtype=dtype)
