"""BatchNorm's running variance is updated with the BIASED batch variance (Flax), not PyTorch's unbiased one.

The README ("The paper's recipe") states the size of that difference from this rule; a Flax release that changed
it would fail here, and the README paragraph would need a second look.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def test_running_variance_moves_toward_the_biased_batch_variance():
    # As the models build it (msml_jax/models/resnet.py, inception.py, heads.py): momentum 0.9 in Flax's sense
    # (PyTorch's 0.1). 16 values a channel: batch 4 x a 2 x 2 feature map.
    bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 2, 3)), jnp.float32)
    variables = bn.init(jax.random.key(0), x)
    _, state = bn.apply(variables, x, mutable=["batch_stats"])
    values = np.asarray(x, np.float64).reshape(-1, 3)
    n = values.shape[0]
    before = np.asarray(variables["batch_stats"]["var"], np.float64)
    after = np.asarray(state["batch_stats"]["var"], np.float64)
    biased, unbiased = values.var(axis=0), values.var(axis=0, ddof=1)
    np.testing.assert_allclose(after, 0.9 * before + 0.1 * biased, rtol=1e-5)
    assert not np.allclose(after, 0.9 * before + 0.1 * unbiased, rtol=1e-3)  # PyTorch's rule: 1/15 more
    assert n == 16 and np.allclose(unbiased / biased, n / (n - 1))
