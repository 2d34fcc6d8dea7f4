import numpy as np
import pytest

from msml_jax.data.sampling import PKSampler
from msml_jax.errors import UserError


def _pids():
    # Identities in shuffled order with uneven counts; identity 7 has a single image.
    rng = np.random.default_rng(0)
    pids = np.concatenate([np.full(n, pid) for pid, n in zip([3, 5, 7, 9, 11, 13, 15], [4, 6, 1, 3, 5, 2, 8])])
    return rng.permutation(pids)


def test_batches_hold_P_identities_times_K_images_of_them():
    pids = _pids()
    sampler = PKSampler(pids, P=3, K=4, seed=1)
    for step in range(10):
        indices = sampler.batch_indices(step)
        assert indices.shape == (12,)
        blocks = pids[indices].reshape(3, 4)
        assert all(len(set(row)) == 1 for row in blocks), blocks  # K images of one identity per block
        assert len({row[0] for row in blocks}) == 3  # P distinct identities
        for row_indices, pid in zip(indices.reshape(3, 4), blocks[:, 0]):
            count = np.sum(pids == pid)
            # Without replacement whenever the identity has K images.
            if count >= 4:
                assert len(set(row_indices)) == 4


def test_an_epoch_visits_each_identity_at_most_once_and_covers_P_times_steps():
    pids = _pids()
    sampler = PKSampler(pids, P=3, K=2, seed=5)
    assert sampler.steps_per_epoch == 7 // 3
    seen = [pids[sampler.batch_indices(s)][::2] for s in range(sampler.steps_per_epoch)]
    seen = np.concatenate(seen)
    assert len(seen) == len(set(seen)) == 6


def test_batches_are_a_function_of_seed_and_step_only():
    pids = _pids()
    a, b = PKSampler(pids, 3, 4, seed=2), PKSampler(pids, 3, 4, seed=2)
    # Query b in a different order: no hidden state may leak between steps.
    expected = {s: a.batch_indices(s) for s in range(8)}
    for s in [7, 3, 0, 5, 1, 6, 2, 4]:
        np.testing.assert_array_equal(b.batch_indices(s), expected[s])
    c = PKSampler(pids, 3, 4, seed=3)
    assert any(not np.array_equal(c.batch_indices(s), expected[s]) for s in range(8))


def test_identity_with_fewer_than_K_images_is_sampled_with_replacement():
    pids = np.array([0, 1, 1, 1, 2, 2, 2])
    sampler = PKSampler(pids, P=3, K=3, seed=0)
    indices = sampler.batch_indices(0)
    assert sorted(pids[indices]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert set(indices[pids[indices] == 0]) == {0}


def test_more_identities_per_batch_than_the_dataset_has_is_refused():
    with pytest.raises(UserError, match=r"config.P=8 .* \(7\)"):
        PKSampler(_pids(), P=8, K=2, seed=0)


@pytest.mark.parametrize("num_ids, P", [(12, 3), (7, 3)])
def test_every_epoch_draws_each_identity_once_for_any_seed(num_ids, P):
    # Two images per identity, identities shuffled; 12 ids / P 3: 4 steps cover all; 7 / 3: 2 steps leave one out.
    pids = np.random.default_rng(1).permutation(np.repeat(np.arange(100, 100 + num_ids), 2))
    orders = set()
    for seed in range(6):
        sampler = PKSampler(pids, P=P, K=2, seed=seed)
        per_epoch = sampler.steps_per_epoch
        assert per_epoch == num_ids // P
        for epoch in range(4):
            drawn = np.concatenate([
                pids[sampler.batch_indices(epoch * per_epoch + s)][::2] for s in range(per_epoch)
            ])
            assert len(set(drawn)) == len(drawn) == per_epoch * P, (seed, epoch, drawn)
            if num_ids % P == 0:
                assert sorted(drawn) == list(range(100, 100 + num_ids)), (seed, epoch)
            orders.add(tuple(drawn))
    assert len(orders) == 6 * 4  # every (seed, epoch) reshuffles
