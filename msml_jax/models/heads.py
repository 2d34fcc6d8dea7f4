"""The re-ID head on top of a backbone feature map: the paper's, with the modern options (BNNeck, dropout)."""

import flax.linen as nn
import jax.numpy as jnp

from msml_jax.errors import UserError

EVAL_EMBEDDINGS = ("embedding", "bnneck", "features")


class EmbeddingHead(nn.Module):
    """Global average pooling -> FC to `embed_dim` (the metric embedding) -> [BNNeck] -> [dropout] -> classifier.

    The paper turns the backbone's pooled feature into a 1024-d embedding with one fully connected layer and
    trains a softmax classifier over the training identities on top of it; the metric loss (MSML) acts on the
    embedding. BNNeck (Luo et al. 2019, "Bag of Tricks") inserts a BatchNorm without shift between the
    embedding and a bias-free classifier: the metric loss keeps the embedding before it, the classifier sees
    the normalised one. The head computes in float32.

    Attributes:
      num_classes: classifier outputs.
      embed_dim: embedding size (the paper: 1024).
      bnneck: insert the BatchNorm neck.
      dropout: dropout rate on the classifier's input (0 disables; > 0 needs a "dropout" rng when training).
      eval_embedding: what evaluation ranks with: "embedding" (the FC output), "bnneck" (after the BatchNorm
        neck; needs bnneck) or "features" (the pooled backbone feature).

    Returns:
      dict with `features` [B, C] (pooled backbone output), `embeddings` [B, embed_dim] (for the metric loss),
      `logits` [B, num_classes]; with bnneck also `bnneck` [B, embed_dim]; when eval_embedding is not
      "embedding", `retrieval` (the selected one, what evaluation uses).
    """

    num_classes: int
    embed_dim: int = 1024
    bnneck: bool = False
    dropout: float = 0.0
    eval_embedding: str = "embedding"

    @nn.compact
    def __call__(self, feature_map, train: bool = False):
        features = jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))
        embeddings = nn.Dense(self.embed_dim, name="embedding")(features)
        outputs = {"features": features, "embeddings": embeddings}
        x = embeddings
        if self.bnneck:
            bn = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_bias=False, name="bnneck")
            x = bn(x)
            outputs["bnneck"] = x
        if self.dropout > 0:
            if train and not self.has_rng("dropout"):
                raise UserError(
                    f"config.model.dropout={self.dropout}: dropout needs a 'dropout' rng at training time "
                    "(model.apply(..., rngs={'dropout': key})); set config.model.dropout=0.0 or pass the rng"
                )
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        outputs["logits"] = nn.Dense(self.num_classes, use_bias=not self.bnneck, name="classifier")(x)
        if self.eval_embedding != "embedding":
            outputs["retrieval"] = outputs[self.eval_embedding]
        return outputs
