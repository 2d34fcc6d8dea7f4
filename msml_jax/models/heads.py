"""The paper's re-ID head on top of a backbone feature map."""

import flax.linen as nn
import jax.numpy as jnp


class EmbeddingHead(nn.Module):
    """Global average pooling -> FC to `embed_dim` (the metric embedding) -> classifier.

    The paper turns the backbone's pooled feature into a 1024-d embedding with one
    fully connected layer and trains a softmax classifier over the training
    identities on top of it. The head computes in float32.

    Returns:
      dict with `features` [B, C] (pooled backbone output), `embeddings`
      [B, embed_dim], `logits` [B, num_classes].
    """

    num_classes: int
    embed_dim: int = 1024

    @nn.compact
    def __call__(self, feature_map):
        features = jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))
        embeddings = nn.Dense(self.embed_dim, name="embedding")(features)
        logits = nn.Dense(self.num_classes, name="classifier")(embeddings)
        return {"features": features, "embeddings": embeddings, "logits": logits}
