"""The one entry point from a model's variables to evaluation records: embed each set, rank it in its protocol.

The trainer and eval.py build an `Evaluator` from the config and the loaded evaluation sets and call it; neither
knows which protocol a dataset uses (the eval sets say, see `msml_jax.data.load_datasets`).
"""

import dataclasses

import numpy as np

from msml_jax.distances import EUCLIDEAN
from msml_jax.errors import UserError
from msml_jax.evaluation.protocols import get_protocol
from msml_jax.evaluation.retrieval import embed_split, jit_embed_fn
from msml_jax.evaluation.separation import separation_figures

SEPARATION_FIELDS = ("auc", "neg_closer_than_median_pos", "gap_p95_p5")
SEPARATION_MAX_PAIRS = 200_000  # above this many query x gallery pairs, a fixed-seed sample (see separation.py)

FEATURE_FIELDS = ("pids", "camids", "file_name")  # kept beside the embeddings when a split has them


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How embeddings are computed and compared (config.eval, config.normalize, config.eval_batch_size)."""

    flip: bool = False  # average each image's embedding with its mirror's
    metric: str = EUCLIDEAN  # euclidean | cosine
    pooling: str = "avg"  # tracklet pooling of frame features: avg | max (unless the protocol prescribes one)
    normalize: bool = True  # euclidean distances of l2-normalized embeddings
    rerank: tuple = None  # (k1, k2, lambda): k-reciprocal re-ranking of the distances; None: off
    batch_size: int = 128
    image_size: tuple = (256, 128)

    @classmethod
    def from_config(cls, config, num_devices=1):
        """Settings of `config`; the batch is config.eval_batch_size rounded up to a multiple of `num_devices`."""
        ev = config.get("eval") or {}
        batch = -(-int(config.eval_batch_size) // num_devices) * num_devices
        rerank = None
        if ev.get("rerank", False):
            rerank = (int(ev.get("k1", 20)), int(ev.get("k2", 6)), float(ev.get("lambda_value", 0.3)))
        return cls(flip=bool(ev.get("flip", False)), metric=ev.get("metric", EUCLIDEAN),
                   pooling=ev.get("pooling", "avg"), normalize=bool(config.normalize), rerank=rerank,
                   batch_size=batch, image_size=tuple(config.data.image_size))

    def record_fields(self, protocol=None):
        """The settings a record of `protocol` (a `protocols.Protocol`) was made with: flip, metric, pooling (of
        the protocol's groups, e.g. MARS's tracklets; None when it ranks single images), ap_mode (its AP rule,
        `ranking.AP_MODES`) and, when on, rerank."""
        fields = {"flip": self.flip, "metric": self.metric}
        if protocol is not None:
            fields.update(pooling=protocol.pooling_of(self.pooling), ap_mode=protocol.ap_mode)
        if self.rerank:
            fields["rerank"] = "k1={},k2={},lambda={}".format(*self.rerank)
        return fields


class Evaluator:
    """Embeds every evaluation set over `mesh` and ranks it in its protocol: `evaluator(variables, step)`.

    eval_sets: {dataset: {"query", "gallery", "protocol", "ranking", "trial"}} (msml_jax.data.load_datasets).
    """

    def __init__(self, apply_fn, eval_sets, settings, mesh):
        self.eval_sets, self.settings, self.mesh = eval_sets, settings, mesh
        self.protocols = {name: get_protocol(sets["ranking"]) for name, sets in eval_sets.items()}
        if settings.rerank:
            for name, sets in eval_sets.items():
                gallery, group_by = sets["gallery"], self.protocols[name].group_by
                size = len(np.unique(gallery[group_by])) if group_by else len(gallery["pids"])
                if settings.rerank[0] > size:
                    raise UserError(f"config.eval.k1={settings.rerank[0]} (re-ranking) is larger than the gallery of "
                                    f"{name} ({size} items): set it to at most {size} (--rerank_k1; the paper of "
                                    f"the method uses 20)")
        self.embed_fn = jit_embed_fn(apply_fn, mesh, settings.flip)

    def features(self, variables):
        """{dataset: {"query": features, "gallery": features}}; features = `embeddings` float32 [N, D] plus the
        split's pids, camids (and the protocol's group_by field, e.g. tracklet, and file_name when present) and
        `image_index` (the row's image in the split: for a group, its first frame), one row per image, or per
        group when the dataset's protocol pools groups (MARS's tracklets)."""
        return {name: {part: self._embed(variables, sets[part], self.protocols[name])
                       for part in ("query", "gallery")}
                for name, sets in self.eval_sets.items()}

    def _embed(self, variables, split, protocol):
        s = self.settings
        kwargs = dict(batch_size=s.batch_size, image_size=s.image_size, mesh=self.mesh)
        group_by = protocol.group_by
        if group_by:
            embeddings, _, first = embed_split(self.embed_fn, variables, split, groups=split[group_by],
                                               pooling=protocol.pooling_of(s.pooling), **kwargs)
            rows = first  # a group's pid / camid / name (a tracklet's): those of its first frame
        else:
            embeddings = embed_split(self.embed_fn, variables, split, **kwargs)
            rows = np.arange(len(embeddings))
        out = {"embeddings": embeddings, "image_index": rows}
        fields = FEATURE_FIELDS[:2] + ((group_by,) if group_by else ()) + FEATURE_FIELDS[2:]  # the group: as saved
        out.update({k: np.asarray(split[k])[rows] for k in fields if k in split})
        return out

    def score(self, features, step):
        """One record per dataset from `features` (see `features`).

        A record holds the protocol's ranking metrics, the settings it was made with (`EvalSettings.record_fields`:
        flip, metric, pooling, ap_mode, rerank) and the separation of positive and negative pair
        distances (`separation.separation_figures`: auc, neg_closer_than_median_pos, gap_p95_p5; sampled with a
        fixed seed above SEPARATION_MAX_PAIRS pairs), the paper's Figure 3 as numbers. Both pair the queries with
        the items the protocol ranks them against (`Protocol.ranked_against`: MARS official, every test tracklet).
        """
        records = []
        for name, sets in self.eval_sets.items():
            protocol, q = self.protocols[name], features[name]["query"]
            items = protocol.ranked_against(q, features[name]["gallery"])  # the pairs' other side, as ranked
            metrics = protocol.rank(q, items, metric=self.settings.metric, normalize=self.settings.normalize,
                                    rerank=self.settings.rerank)
            separation = separation_figures(q["embeddings"], items["embeddings"], q["pids"], items["pids"],
                                            q["camids"], items["camids"], metric=self.settings.metric,
                                            normalize=self.settings.normalize, max_pairs=SEPARATION_MAX_PAIRS)
            record = {"step": int(step), "dataset": name, "protocol": sets["protocol"], **metrics,
                      **{k: float(separation[k]) for k in SEPARATION_FIELDS}}
            if sets.get("trial") is not None:
                record["trial"] = int(sets["trial"])
            record.update(self.settings.record_fields(self.protocols[name]))
            records.append(record)
        return records

    def __call__(self, variables, step):
        return self.score(self.features(variables), step)
