"""Using a trained run from Python: the Embedder (checkpoint -> embeddings -> search), nothing else.

Evaluating, drawing and exporting a run are eval.py's: `msml_jax.evaluation.workdir`.
"""

import os

import jax
import numpy as np

from msml_jax.distances import comparable
from msml_jax.errors import UserError
from msml_jax.evaluation.evaluator import EvalSettings
from msml_jax.evaluation.retrieval import embed_batches, jit_embed_fn
from msml_jax.evaluation.workdir import load_run


class Embedder:
    """A trained run's embedding function on whatever device is present; needs JAX, not TensorFlow.

        embedder = Embedder.from_workdir("runs/demo")            # or checkpoint="best" | STEP
        gallery = embedder.embed(["a.jpg", "b.png"])             # files, or uint8 arrays of any size
        indices, distances = embedder.search(query, gallery, k=10)

    `embed` returns the run's embeddings: `evaluation.retrieval.embed_step`, the one function that evaluation
    (eval.py --save_features) and the exported file (eval.py --export) run too: raw (not l2-normalized), the run's
    flip test applied, in batches. Images are resized to the run's input size with bilinear interpolation (no
    antialiasing) and rounded, as the evaluation pipeline's tf.image.resize does. `search` compares them as
    evaluation does (`distances.comparable`: l2-normalized Euclidean by default, the run's metric) and never holds
    a query x gallery matrix larger than one block.
    """

    def __init__(self, model, variables, config, step=None, batch_size=64):
        self.model, self.config, self.step, self.batch_size = model, config, step, batch_size
        self.settings = EvalSettings.from_config(config)
        self.variables = jax.device_put(variables)
        self._embed = jit_embed_fn(model.apply, flip=self.settings.flip)

    @classmethod
    def from_workdir(cls, workdir, checkpoint="latest", batch_size=64):
        config, model, variables, step = load_run(workdir, None, checkpoint)
        return cls(model, variables, config, step, batch_size)

    def _load(self, image):
        if isinstance(image, (str, os.PathLike)):
            from PIL import Image

            try:
                with Image.open(image) as im:
                    image = np.asarray(im.convert("RGB"))
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read {image} as an image ({e}): pass image files or uint8 arrays") from e
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise UserError(f"an image must be uint8 [h, w, 3], got {image.dtype} {image.shape}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise UserError(f"an image has no pixels (shape {image.shape}): pass images of at least 1 x 1")
        height, width = self.settings.image_size
        if image.shape[:2] == (height, width):
            return image
        resized = jax.image.resize(image.astype(np.float32), (height, width, 3), "bilinear", antialias=False)
        return np.asarray(np.clip(np.round(resized), 0, 255), np.uint8)

    def embed(self, images):
        """float32 [N, D] embeddings of `images` (a sequence of file paths or uint8 [h, w, 3] arrays, or [N, h, w,
        3]; one path or one [h, w, 3] array is one image), in batches of `batch_size` padded to one shape (one
        compile). No image: [0, D]."""
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]  # one image, not a sequence of rows or characters
        elif isinstance(images, np.ndarray) and images.ndim != 4:
            raise UserError(f"embed takes images [N, h, w, 3], one image [h, w, 3] or a list of them; got an array "
                            f"of shape {images.shape}")
        images = list(images)
        batches = (np.stack([self._load(im) for im in images[start: start + self.batch_size]])
                   for start in range(0, len(images), self.batch_size))
        out = list(embed_batches(self._embed, self.variables, batches, len(images), batch_size=self.batch_size))
        if not out:
            return np.zeros((0, self.embedding_dim), np.float32)
        return np.concatenate(out)

    @property
    def embedding_dim(self):
        """D, the size of an embedding (from the network's shapes; nothing is computed)."""
        height, width = self.settings.image_size
        shape = jax.eval_shape(self._embed, self.variables, jax.ShapeDtypeStruct((1, height, width, 3), np.uint8))
        return int(shape.shape[-1])

    def search(self, query_embeddings, gallery_embeddings, k=10):
        """(indices int [Q, k], distances float32 [Q, k]) of each query's k nearest gallery embeddings (all of them
        when the gallery has fewer than k)."""
        from msml_jax.evaluation.search import top_k

        q, g = (np.asarray(x, np.float32) for x in (query_embeddings, gallery_embeddings))
        for name, x in (("query", q), ("gallery", g)):
            if x.ndim != 2 or x.shape[1] == 0:
                raise UserError(f"search: the {name} embeddings must be float [N, D] (from embed), got shape "
                                f"{x.shape}")
        if q.shape[1] != g.shape[1]:
            raise UserError(f"search: query embeddings have {q.shape[1]} dimensions, gallery ones {g.shape[1]}: embed "
                            f"both with the same run")
        if not 1 <= int(k):
            raise UserError(f"search: k={k} must be at least 1")
        if len(g) == 0:
            raise UserError("search: the gallery is empty: embed at least one gallery image")
        if len(q) == 0:
            return np.zeros((0, min(int(k), len(g))), np.int64), np.zeros((0, min(int(k), len(g))), np.float32)
        q, g = (np.asarray(x) for x in comparable(q, g, self.settings.metric, self.settings.normalize))
        try:
            return top_k(q, g, min(int(k), len(g)), metric=self.settings.metric)
        except ValueError as e:  # NaN or infinite embeddings
            raise UserError(f"search: {e}") from None
