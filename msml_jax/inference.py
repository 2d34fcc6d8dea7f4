"""From a model and its variables to embeddings of a split, and to ranking metrics."""

import jax.numpy as jnp
import numpy as np

from msml_jax.data.pipeline import eval_dataset
from msml_jax.evaluation import evaluate_ranking
from msml_jax.losses import l2_normalize, pairwise_distance
from msml_jax.training import parallel


def embed_split(embed_fn, variables, split, *, batch_size, image_size, mesh=None):
    """Embeddings float32 [N, D] of every image of `split`, in order.

    `embed_fn(variables, images)` is a jitted function of uint8 images
    [batch_size, h, w, 3]; batches are padded to one shape, so it compiles once.
    With a `mesh` (see `training.loop.jit_embed_step`), each batch is split over its devices: this process loads
    only its rows, and every process gets the whole batch's embeddings back.
    """
    rows = None if mesh is None else parallel.local_rows(batch_size, mesh)
    chunks = []
    for batch in eval_dataset(split, batch_size=batch_size, image_size=image_size, rows=rows).as_numpy_iterator():
        images = batch["images"]
        if mesh is not None:
            images = parallel.global_batch({"images": images}, batch_size, mesh)["images"]
        chunks.append(np.asarray(embed_fn(variables, images)))  # replicated: the whole batch in every process
    return np.concatenate(chunks)[: len(split["pids"])]  # the last batch's padding dropped


def retrieval_metrics(query_embeddings, gallery_embeddings, query, gallery, normalize=True):
    """CMC / mAP / mINP of Euclidean ranking (on l2-normalised embeddings when `normalize`)."""
    q, g = jnp.asarray(query_embeddings), jnp.asarray(gallery_embeddings)
    if normalize:
        q, g = l2_normalize(q), l2_normalize(g)
    distmat = np.asarray(pairwise_distance(q, g))
    result = evaluate_ranking(distmat, query["pids"], gallery["pids"], query["camids"], gallery["camids"])
    cmc = result["cmc"]
    return {
        "mAP": float(result["mAP"]),
        "rank1": float(cmc[0]),
        "rank5": float(cmc[4]),
        "rank10": float(cmc[9]),
        "mINP": float(result["mINP"]),
        "num_queries": int(result["num_valid_queries"]),
    }
