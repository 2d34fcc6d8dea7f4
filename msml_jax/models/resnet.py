"""ResNet backbones in Flax Linen, laid out as torchvision builds them (or, as an option, as Keras does).

torchvision (the default, `keras_style=False`): 3x3 convolutions with explicit padding 1, the stride of a
bottleneck on its 3x3 convolution ("ResNet v1.5"), no convolution biases, BatchNorm with epsilon 1e-5 and
momentum 0.1 in PyTorch's sense (0.9 in Flax's), a projection shortcut (1x1 convolution + BatchNorm) wherever
the shape changes.

Keras (`keras_style=True`, `keras.applications.ResNet50`): the stride of a bottleneck on its first 1x1
convolution ("ResNet v1"), every convolution with a bias, BatchNorm epsilon 1.001e-5. The stem (7x7/2 after
zero padding 3, 3x3/2 max pooling after zero padding 1) computes the same function in both: the pooling follows
a ReLU, so Keras's zero padding and Flax's -inf padding give the same maxima.

Variable names follow torchvision's state dict (`conv1`, `bn1`, `layer1_0/conv1`, `layer1_0/downsample_conv`,
...) so that weights files map onto them one to one (see `msml_jax.models.pretrained`).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from msml_jax.models.registry import register_backbone

TORCH_BN_EPSILON = 1e-5
KERAS_BN_EPSILON = 1.001e-5


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34 block). Output channels: `filters`."""

    filters: int
    strides: int = 1
    norm: Any = nn.BatchNorm
    dtype: Any = jnp.float32
    keras_style: bool = False  # accepted for a uniform block signature; Keras ships no ResNet-18/34

    expansion = 1

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(nn.Conv, use_bias=self.keras_style, dtype=self.dtype)
        y = conv(self.filters, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = conv(self.filters, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
        y = self.norm(name="bn2")(y)
        if x.shape[-1] != self.filters or self.strides != 1:
            x = conv(self.filters, (1, 1), (self.strides, self.strides), padding="VALID", name="downsample_conv")(x)
            x = self.norm(name="downsample_bn")(x)
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (grouped) -> 1x1 expand, plus a shortcut; torchvision's `Bottleneck`.

    Output channels 4 * `filters`; inner width `int(filters * width_per_group / 64) * groups`, so
    groups=1, width_per_group=64 is ResNet-50/101, groups=32, width_per_group=4 is ResNeXt-50 32x4d, and
    groups == inner width is a depthwise (channel-wise) 3x3 (ResNet50-X, see `resnet50x`). The stride sits
    on the 3x3 convolution (torchvision) or on the first 1x1 (`keras_style`, with conv biases).
    """

    filters: int
    strides: int = 1
    norm: Any = nn.BatchNorm
    dtype: Any = jnp.float32
    groups: int = 1
    width_per_group: int = 64
    depthwise: bool = False  # groups = inner width (overrides `groups`)
    keras_style: bool = False

    expansion = 4

    @nn.compact
    def __call__(self, x):
        width = int(self.filters * (self.width_per_group / 64.0)) * self.groups
        groups = width if self.depthwise else self.groups
        out = self.filters * self.expansion
        conv = functools.partial(nn.Conv, use_bias=self.keras_style, dtype=self.dtype)
        s = (self.strides, self.strides)
        s1, s3 = (s, (1, 1)) if self.keras_style else ((1, 1), s)
        y = nn.relu(self.norm(name="bn1")(conv(width, (1, 1), s1, padding="VALID", name="conv1")(x)))
        y = conv(width, (3, 3), s3, padding=((1, 1), (1, 1)), feature_group_count=groups, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.norm(name="bn3")(conv(out, (1, 1), padding="VALID", name="conv3")(y))
        if x.shape[-1] != out or self.strides != 1:
            x = conv(out, (1, 1), s, padding="VALID", name="downsample_conv")(x)
            x = self.norm(name="downsample_bn")(x)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """Feature extractor: stem, then stages of blocks; returns the last feature map [B, h, w, C].

    Attributes:
      stage_sizes: blocks per stage.
      widths: `filters` per stage (BasicBlock outputs that many channels, Bottleneck 4x).
      block: BasicBlock or Bottleneck (with its options bound by functools.partial).
      stem_width, stem_kernel, stem_strides, stem_pool: the stem; torchvision's is
        (64, 7, 2, True), a 3x3 stride-2 stem without pooling suits small images.
      last_stride: stride of the last stage (1 keeps more spatial detail, a common re-ID choice).
      keras_style: Keras's ResNet layout (stride on the first 1x1, conv biases, BN epsilon 1.001e-5).
    """

    stage_sizes: Sequence[int]
    widths: Sequence[int]
    block: Any = BasicBlock
    stem_width: int = 64
    stem_kernel: int = 7
    stem_strides: int = 2
    stem_pool: bool = True
    last_stride: int = 2
    keras_style: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        # BatchNorm statistics and parameters stay float32 whatever the compute dtype.
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=KERAS_BN_EPSILON if self.keras_style else TORCH_BN_EPSILON,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        pad = self.stem_kernel // 2
        x = nn.Conv(
            self.stem_width,
            (self.stem_kernel, self.stem_kernel),
            (self.stem_strides, self.stem_strides),
            padding=((pad, pad), (pad, pad)),
            use_bias=self.keras_style,
            dtype=self.dtype,
            name="conv1",
        )(x)
        x = nn.relu(norm(name="bn1")(x))
        if self.stem_pool:
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        last = len(self.stage_sizes) - 1
        for i, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for j in range(num_blocks):
                strides = 1 if i == 0 or j > 0 else (self.last_stride if i == last else 2)
                x = self.block(
                    width, strides, norm=norm, dtype=self.dtype, keras_style=self.keras_style, name=f"layer{i + 1}_{j}"
                )(x)
        return x


@register_backbone("small_resnet", stride=16, keras_style=True)
def small_resnet(dtype=jnp.float32, last_stride=2, keras_style=False):
    """A ResNet-10-like backbone for small images on CPU: 3x3 stride-2 stem, widths 16-128, one block per stage."""
    return ResNet(
        stage_sizes=(1, 1, 1, 1),
        widths=(16, 32, 64, 128),
        stem_width=16,
        stem_kernel=3,
        stem_strides=2,
        stem_pool=False,
        last_stride=last_stride,
        keras_style=keras_style,
        dtype=dtype,
    )


def _imagenet_resnet(stage_sizes, block, dtype, last_stride, keras_style):
    return ResNet(
        stage_sizes=stage_sizes,
        widths=(64, 128, 256, 512),
        block=block,
        last_stride=last_stride,
        keras_style=keras_style,
        dtype=dtype,
    )


@register_backbone("resnet18", stride=32)
def resnet18(dtype=jnp.float32, last_stride=2, keras_style=False):
    """torchvision's resnet18 feature extractor (no fc): 512 channels at stride 32."""
    return _imagenet_resnet((2, 2, 2, 2), BasicBlock, dtype, last_stride, keras_style)


@register_backbone("resnet34", stride=32)
def resnet34(dtype=jnp.float32, last_stride=2, keras_style=False):
    """torchvision's resnet34 feature extractor (no fc): 512 channels at stride 32."""
    return _imagenet_resnet((3, 4, 6, 3), BasicBlock, dtype, last_stride, keras_style)


@register_backbone("resnet50", stride=32, keras_style=True)
def resnet50(dtype=jnp.float32, last_stride=2, keras_style=False):
    """torchvision's resnet50 (or, with keras_style, keras.applications.ResNet50) without fc: 2048 channels."""
    return _imagenet_resnet((3, 4, 6, 3), Bottleneck, dtype, last_stride, keras_style)


@register_backbone("resnet101", stride=32, keras_style=True)
def resnet101(dtype=jnp.float32, last_stride=2, keras_style=False):
    """torchvision's resnet101 feature extractor (no fc): 2048 channels at stride 32."""
    return _imagenet_resnet((3, 4, 23, 3), Bottleneck, dtype, last_stride, keras_style)


@register_backbone("resnext50_32x4d", stride=32)
def resnext50_32x4d(dtype=jnp.float32, last_stride=2, keras_style=False):
    """torchvision's resnext50_32x4d feature extractor (no fc): 32 groups of 4 channels in the first stage."""
    block = functools.partial(Bottleneck, groups=32, width_per_group=4)
    return _imagenet_resnet((3, 4, 6, 3), block, dtype, last_stride, keras_style)


@register_backbone("resnet50x", stride=32, partial_weights={
    "torchvision": "depthwise 3x3 convolutions: no ImageNet weights of their shape exist"})
def resnet50x(dtype=jnp.float32, last_stride=2, keras_style=False):
    """ResNet50-X ("Resnet50-Xception"): ResNet-50 whose bottleneck 3x3 convolutions are channel-wise.

    The paper (section 2.1) lists "Resnet50-Xception (Resnet50-X)" as its third base model and describes it as
    a ResNet-50 in which the 3x3 convolutions of the bottlenecks are replaced by Xception's channel-wise
    convolutions. Xception's building block is the depthwise separable convolution: a spatial convolution
    applied to each channel separately (groups = channels) followed by a 1x1 pointwise convolution that mixes
    channels. A ResNet bottleneck already surrounds its 3x3 with 1x1 convolutions, so making the 3x3 depthwise
    (groups equal to its 64..512 channels) turns each bottleneck into 1x1 -> depthwise 3x3 -> 1x1, i.e. an
    Xception-style separable convolution inside the residual block, with everything else (stages, widths,
    shortcuts, BatchNorm) kept as ResNet-50. In torchvision's terms this is the Bottleneck with
    `groups = width` (the limit of ResNeXt's cardinality, one channel per group). It has no ImageNet weights
    in torchvision or Keras: train it from scratch or bring a file in torchvision's layout.
    """
    block = functools.partial(Bottleneck, depthwise=True)
    return _imagenet_resnet((3, 4, 6, 3), block, dtype, last_stride, keras_style)
