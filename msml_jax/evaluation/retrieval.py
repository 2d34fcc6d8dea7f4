"""From a model's variables to the embeddings of a split, and from embeddings to distances.

No TensorFlow at import: `embed_split` imports the tf.data evaluation pipeline when it first runs, so the jitted
embedding and the distances work on a machine with JAX alone.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from msml_jax import sharding
from msml_jax.distances import COSINE, EUCLIDEAN, RANKING_METRICS, comparable, pairwise_distance



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


def jit_embed_fn(apply_fn, mesh=None, flip=False):
    """`embed_step` jitted over `mesh`: variables replicated, images sharded on "data", embeddings replicated.

    Returns fn(variables, images) -> float32 [B, D], the whole batch's embeddings on every device and process.
    `mesh` None: jitted for the default device (the Embedder).
    """
    embed = functools.partial(embed_step, apply_fn, flip=flip)
    if mesh is None:
        return jax.jit(embed)
    repl = sharding.replicated(mesh)
    return jax.jit(embed, in_shardings=(repl, sharding.batch_sharding(mesh)), out_shardings=repl)


def embed_batches(embed_fn, variables, batches, num_images, *, batch_size, mesh=None):
    """Yields the embeddings float32 [b, D] of each batch of `batches` (uint8 images [b', h, w, 3]), in order.

    Every call of `embed_fn` (see `jit_embed_fn`) sees one shape, [batch_size, h, w, 3], so it compiles once: a
    short batch is padded by repeating its first image. Rows past `num_images` (the padding) are dropped. With a
    `mesh`, each batch holds this process's rows of a global batch of `batch_size`, and every process gets the
    whole batch's embeddings back.
    """
    done = 0
    for images in batches:
        if mesh is not None:
            images = sharding.global_batch({"images": images}, batch_size, mesh)["images"]
        elif len(images) < batch_size:
            images = np.concatenate([images, np.repeat(images[:1], batch_size - len(images), 0)])
        embeddings = np.asarray(embed_fn(variables, images))[: num_images - done]
        done += len(embeddings)
        yield embeddings


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
    dataset = eval_dataset(split, batch_size=batch_size, image_size=image_size, rows=rows)
    batches = (batch["images"] for batch in dataset.as_numpy_iterator())
    chunks, done = [], 0
    for embeddings in embed_batches(embed_fn, variables, batches, n, batch_size=batch_size, mesh=mesh):
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


def distance_matrix(query, gallery, metric=EUCLIDEAN, normalize=True):
    """Distances float32 [Q, G] between query [Q, D] and gallery [G, D] embeddings.

    euclidean: on l2-normalized embeddings when `normalize` (the paper's), raw ones otherwise; cosine:
    1 - cosine similarity (normalization implied); see `distances.comparable`. Smaller is more similar.
    """
    if metric not in RANKING_METRICS:
        raise ValueError(f"unknown metric {metric!r}: valid metrics are {', '.join(RANKING_METRICS)}")
    q, g = comparable(jnp.asarray(query, jnp.float32), jnp.asarray(gallery, jnp.float32), metric, normalize)
    return np.asarray(pairwise_distance(q, g, metric=metric))
