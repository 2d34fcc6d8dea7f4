"""ResNet backbones in Flax Linen, laid out as torchvision builds them.

3x3 convolutions with explicit padding 1, no convolution biases, BatchNorm with
epsilon 1e-5 and momentum 0.1 in PyTorch's sense (0.9 in Flax's), a projection
shortcut (1x1 convolution + BatchNorm) wherever the shape changes.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34 block)."""

    filters: int
    strides: int = 1
    norm: Any = nn.BatchNorm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        y = conv(self.filters, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)))(x)
        y = nn.relu(self.norm()(y))
        y = conv(self.filters, (3, 3), padding=((1, 1), (1, 1)))(y)
        y = self.norm()(y)
        if x.shape[-1] != self.filters or self.strides != 1:
            x = self.norm()(conv(self.filters, (1, 1), (self.strides, self.strides))(x))
        return nn.relu(y + x)


class ResNet(nn.Module):
    """Feature extractor: stem, then stages of blocks; returns the last feature map [B, h, w, C].

    Attributes:
      stage_sizes: blocks per stage.
      widths: output channels per stage.
      stem_width, stem_kernel, stem_strides, stem_pool: the stem; torchvision's is
        (64, 7, 2, True), a 3x3 stride-2 stem without pooling suits small images.
      last_stride: stride of the last stage (1 keeps more spatial detail, a common re-ID choice).
    """

    stage_sizes: Sequence[int]
    widths: Sequence[int]
    block: Any = BasicBlock
    stem_width: int = 64
    stem_kernel: int = 7
    stem_strides: int = 2
    stem_pool: bool = True
    last_stride: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        # BatchNorm statistics stay float32 whatever the compute dtype.
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32
        )
        pad = self.stem_kernel // 2
        x = nn.Conv(
            self.stem_width,
            (self.stem_kernel, self.stem_kernel),
            (self.stem_strides, self.stem_strides),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            dtype=self.dtype,
        )(x)
        x = nn.relu(norm()(x))
        if self.stem_pool:
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        last = len(self.stage_sizes) - 1
        for i, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for j in range(num_blocks):
                strides = 1 if i == 0 or j > 0 else (self.last_stride if i == last else 2)
                x = self.block(width, strides, norm=norm, dtype=self.dtype)(x)
        return x


def small_resnet(dtype=jnp.float32, last_stride=2):
    """A ResNet-10-like backbone for small images on CPU: 3x3 stride-2 stem, widths 16-128, one block per stage."""
    return ResNet(
        stage_sizes=(1, 1, 1, 1),
        widths=(16, 32, 64, 128),
        stem_width=16,
        stem_kernel=3,
        stem_strides=2,
        stem_pool=False,
        last_stride=last_stride,
        dtype=dtype,
    )


def resnet18(dtype=jnp.float32, last_stride=2):
    """torchvision's resnet18 feature extractor (no fc)."""
    return ResNet(stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), last_stride=last_stride, dtype=dtype)
