"""The backbone registry: each backbone module declares its backbones here, once, with what the rest must know.

    @register_backbone("resnet50", stride=32, keras_style=True)
    def resnet50(dtype=jnp.float32, last_stride=2, keras_style=False): ...

The config schema reads the names, strides and Keras layouts from `BACKBONES`; `get_model` builds from it;
`pretrained.load_pretrained` reads which weight files load only in part. Every module of `msml_jax.models` is
imported with the package, so a new backbone is one new module (or function) with its registration.
"""

import dataclasses
from typing import Callable, Mapping


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A backbone as the rest of the library sees it.

    build: fn(dtype, last_stride, keras_style) -> a Flax module mapping images [B, H, W, 3] to a feature map.
    stride: total stride with last_stride = 2 (last_stride = 1 halves it); an input smaller than it leaves a last
      feature map computed from padding alone.
    keras_style: whether it can be laid out as keras.applications' (and so load a Keras `.h5` file).
    partial_weights: {weight layout: why only part of such a file loads} (e.g. a torchvision ResNet50 file onto
      ResNet50-X, whose depthwise kernels have no ImageNet weights); the reason goes into the load report.
    """

    name: str
    build: Callable
    stride: int
    keras_style: bool = False
    partial_weights: Mapping[str, str] = dataclasses.field(default_factory=dict)


BACKBONES = {}


def register_backbone(name, *, stride, keras_style=False, partial_weights=None):
    """Decorator: registers `build` (fn(dtype, last_stride, keras_style) -> module) as backbone `name`."""

    def register(build):
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = Backbone(name, build, int(stride), bool(keras_style), dict(partial_weights or {}))
        return build

    return register


def get_backbone(name):
    """The registered `Backbone` called `name`; ValueError naming the registered ones otherwise."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: registered backbones are {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]
