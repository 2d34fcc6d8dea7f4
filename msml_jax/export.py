"""A trained embedder as one serialized `jax.export` file, runnable with jax alone (no flax, no msml_jax).

`export_embedder` writes two files:

* `PATH`: the serialized `jax.export.Exported` of  uint8 images [b, h, w, 3] (RGB, 0..255) -> float32
  embeddings [b, D], with the batch size `b` symbolic (any b >= 1 works; each new b compiles once) and h, w
  fixed. The model's weights are baked in as constants. The function is `evaluation.retrieval.embed_step`, the
  one that evaluation and the Embedder run: the same embeddings, raw (not normalized), flip test included.
* `PATH.json`: how to feed it and compare its outputs (input size and dtype, preprocessing, embedding
  dimension, distance metric, whether to l2-normalize before that distance, flip), plus the caller's metadata.

Serving, with nothing but jax installed:

    exported = jax.export.deserialize(open(PATH, "rb").read())
    embeddings = exported.call(images)  # uint8 [b, h, w, 3] -> float32 [b, D]
    # then compare as the JSON says: l2-normalize each row when "normalize", then the "distance"

`load_exported` does the same and also reads the JSON.

The numerics are fixed at export: a file lowered on a CPU-only host ran on an H200 (jax 0.11.2) with
embeddings within 4e-4 (max abs, l2-normalised, small ResNet) of the CPU's, the GPU's convolutions rounding
differently; compare embeddings across devices with a tolerance, not for equality.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from msml_jax.distances import EUCLIDEAN
from msml_jax.evaluation.retrieval import embed_step

__all__ = ["DEFAULT_PLATFORMS", "export_embedder", "load_exported"]

# Lowered for every platform a server might run on, so the file runs on CPU, NVIDIA GPU or TPU alike
# (the caller's backend picks its lowering).
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")

_PREPROCESSING = ("RGB uint8 images resized to input_shape[1:3] (bilinear, as tf.image.resize in the evaluation "
                  "pipeline, then rounded); no other scaling: the model normalises pixels itself")
_EMBEDDING = ("raw (not l2-normalized), the flip test applied as `flip` says; to rank as the evaluation does, "
              "l2-normalize each embedding when `normalize` is true, then compare with `distance`")


def export_embedder(path, apply_fn, variables, image_size, *, metadata, platforms=DEFAULT_PLATFORMS):
    """Serializes the embedder to `path` and its description to `path + ".json"`; returns that description.

    Args:
        path: output file (its folder is created).
        apply_fn: `model.apply`; called as apply_fn(variables, images, train=False) -> dict of outputs.
        variables: the model's variables (params, batch_stats); baked into the file.
        image_size: (height, width) of the input images.
        metadata: dict written into the JSON. Read from it: `flip` (bool, default False: the flip test, applied
            inside the file). Written with defaults: `distance` (`distances.EUCLIDEAN`) and `normalize` (False): how the
            outputs are compared, `distances.comparable`'s rule (l2-normalize each embedding, then the distance);
            the file itself never normalizes. The rest (config name, step, dataset, ...) is copied as is and must
            be JSON-serializable.
        platforms: jax.export platforms to lower for (None: the current backend only).

    Returns:
        the dict written as JSON: the metadata plus `file`, `format`, `input_shape` ([null, h, w, 3]: null is
        the free batch size), `input_dtype`, `output_dtype`, `embedding_dim`, `preprocessing`, `platforms`,
        `jax_version`.
    """
    metadata = dict(metadata)
    flip = bool(metadata.setdefault("flip", False))
    metadata["normalize"] = bool(metadata.get("normalize", False))
    metadata.setdefault("distance", EUCLIDEAN)
    metadata.setdefault("embedding", _EMBEDDING)
    height, width = (int(s) for s in image_size)
    # The variables are closed over, so they become constants of the exported module: one self-contained file.
    jitted = jax.jit(lambda images: embed_step(apply_fn, variables, images, flip=flip))
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {height}, {width}, 3"), jnp.uint8)
    exported = jax.export.export(jitted, platforms=platforms)(spec)
    (out_aval,) = exported.out_avals
    info = {
        **metadata,
        "file": os.path.basename(path),
        "format": "jax.export",
        "input_shape": [None, height, width, 3],
        "input_dtype": "uint8",
        "output_dtype": str(out_aval.dtype),
        "embedding_dim": int(out_aval.shape[-1]),
        "preprocessing": metadata.get("preprocessing", _PREPROCESSING),
        "platforms": list(exported.platforms),
        "jax_version": jax.__version__,
    }
    text = json.dumps(info, indent=2)  # before writing anything: metadata that is not JSON fails here
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(exported.serialize())
    with open(path + ".json", "w") as f:
        f.write(text)
    return info


def load_exported(path):
    """(fn, info): fn(images uint8 [b, h, w, 3]) -> float32 embeddings [b, D], and the JSON beside `path`.

    Uses only jax and json, like a server would: `jax.export.deserialize(bytes).call(images)`.
    """
    with open(path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    info = None
    if os.path.exists(path + ".json"):
        with open(path + ".json") as f:
            info = json.load(f)
    return exported.call, info
