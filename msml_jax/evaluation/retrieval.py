"""From a model's variables to the embeddings of a split, and from embeddings to distances.

No TensorFlow at import: `embed_split` imports the tf.data evaluation pipeline when it first runs, so the jitted
embedding and the distances work on a machine with JAX alone.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from msml_jax import sharding
from msml_jax.distances import comparable, pairwise_distance

METRICS = ("euclidean", "cosine")
POOLINGS = ("avg", "max")


def embed_step(apply_fn, variables, images, flip=False):
    """Evaluation embeddings float32 [B, D] of uint8 images [B, h, w, 3] (inference mode).

    A model whose head offers several embeddings names the one to rank with `retrieval`. With `flip` (the
    flip test) the embedding of each image and of its horizontal mirror are averaged, before any normalization.
    """

    def embed(x):
        outputs = apply_fn(variables, x, train=False)
        return outputs.get("retrieval", outputs["embeddings"]).astype(jnp.float32)

    embeddings = embed(images)
    if flip:
        embeddings = (embeddings + embed(images[:, :, ::-1])) / 2
    return embeddings


def jit_embed_fn(apply_fn, mesh, flip=False):
    """`embed_step` jitted over `mesh`: variables replicated, images sharded on "data", embeddings replicated.

    Returns fn(variables, images) -> float32 [B, D], the whole batch's embeddings on every device and process.
    """
    repl = sharding.replicated(mesh)
    return jax.jit(
        functools.partial(embed_step, apply_fn, flip=flip),
        in_shardings=(repl, sharding.batch_sharding(mesh)),
        out_shardings=repl,
    )


def embed_split(embed_fn, variables, split, *, batch_size, image_size, mesh=None, groups=None, pooling="avg"):
    """Embeddings float32 [N, D] of every image of `split`, in order; or pooled per group.

    `embed_fn(variables, images)` is a jitted function of uint8 images [batch_size, h, w, 3]; batches are padded
    to one shape, so it compiles once. With a `mesh` (see `jit_embed_fn`) each batch is split over its devices:
    this process loads only its rows, and every process gets the whole batch's embeddings back.

    With `groups` (int [N], e.g. MARS's `tracklet`), the features are pooled per group as they stream out of the
    network ("avg": mean, "max": element-wise max), so memory holds one feature per group, never one per image.
    Returns then (pooled float32 [U, D], the group ids int [U] ascending, index [U] of each group's first image).
    """
    from msml_jax.data.pipeline import eval_dataset  # tf.data: only when a split is embedded

    rows = None if mesh is None else sharding.local_rows(batch_size, mesh)
    n = len(split["pids"])
    if groups is not None:
        ids, first, inverse = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(ids)).astype(np.float32)
        pooled = None
    chunks, done = [], 0
    for batch in eval_dataset(split, batch_size=batch_size, image_size=image_size, rows=rows).as_numpy_iterator():
        images = batch["images"]
        if mesh is not None:
            images = sharding.global_batch({"images": images}, batch_size, mesh)["images"]
        embeddings = np.asarray(embed_fn(variables, images))[: n - done]  # the last batch's padding dropped
        if groups is None:
            chunks.append(embeddings)
        else:
            if pooled is None:
                pooled = np.full((len(ids), embeddings.shape[1]), 0.0 if pooling == "avg" else -np.inf, np.float32)
            where = inverse[done: done + len(embeddings)]
            (np.add if pooling == "avg" else np.maximum).at(pooled, where, embeddings)
        done += len(embeddings)
    if groups is None:
        return np.concatenate(chunks)
    if pooling == "avg":
        pooled /= counts[:, None]
    return pooled, ids, first


def distance_matrix(query, gallery, metric="euclidean", normalize=True):
    """Distances float32 [Q, G] between query [Q, D] and gallery [G, D] embeddings.

    euclidean: on l2-normalized embeddings when `normalize` (the paper's), raw ones otherwise; cosine:
    1 - cosine similarity (normalization implied); see `distances.comparable`. Smaller is more similar.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: valid metrics are {', '.join(METRICS)}")
    q, g = comparable(jnp.asarray(query, jnp.float32), jnp.asarray(gallery, jnp.float32), metric, normalize)
    return np.asarray(pairwise_distance(q, g, metric=metric))
