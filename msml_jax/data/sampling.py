"""PK sampling: each batch holds P identities x K images, fixed by (seed, epoch, step).

Pure numpy and stateless: the indices of global step `s` can be recomputed at any
time, which is what lets a run resume mid-epoch with exactly the batches it would
have seen.
"""

import functools

import numpy as np

from msml_jax.errors import UserError


class PKSampler:
    """Batch indices into a split with integer `pids` [N], identities in any order.

    An epoch visits every identity once, in an order drawn from (seed, epoch):
    `steps_per_epoch = num_identities // P` batches of P identities. Each identity
    contributes K of its images, drawn without replacement from (seed, epoch, step),
    or with replacement when it has fewer than K images.
    """

    def __init__(self, pids, P, K, seed):
        pids = np.asarray(pids)
        self.P, self.K, self.seed = int(P), int(K), int(seed)
        self.identities, inverse = np.unique(pids, return_inverse=True)
        if len(self.identities) < self.P:
            raise UserError(
                f"config.P={self.P} is larger than the number of training identities "
                f"({len(self.identities)}): set config.P to at most {len(self.identities)}"
            )
        order = np.argsort(inverse, kind="stable")
        self.counts = np.bincount(inverse, minlength=len(self.identities))  # images of each identity
        self.images_of = np.split(order, np.cumsum(self.counts)[:-1])  # their indices (in `identities` order)
        self.steps_per_epoch = len(self.identities) // self.P

    @functools.lru_cache(maxsize=2)
    def _identity_order(self, epoch):
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.identities))

    def batch_indices(self, step):
        """Image indices int64 [P * K] of global step `step`, identity blocks of K."""
        epoch, within = divmod(int(step), self.steps_per_epoch)
        chosen = self._identity_order(epoch)[within * self.P : (within + 1) * self.P]
        rng = np.random.default_rng([self.seed, epoch, within])
        return np.concatenate([
            rng.choice(self.images_of[i], self.K, replace=len(self.images_of[i]) < self.K)
            for i in chosen
        ]).astype(np.int64)
