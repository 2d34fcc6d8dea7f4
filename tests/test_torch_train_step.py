"""benchmarks/torch_train_step.py's pieces (the PyTorch reference step); skipped where torch is not installed."""

import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location("torch_train_step", os.path.join(ROOT, "benchmarks", "torch_train_step.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_resnet50_is_torchvisions():
    torchvision = pytest.importorskip("torchvision")
    bench = _bench()
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    plain = bench.PlainResNet50().eval()
    # strict: same parameter and buffer names and shapes; then same function on the same weights.
    plain.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np.testing.assert_allclose(plain(x).numpy(), reference(x).numpy(), rtol=1e-4, atol=1e-5)


def _brute_force_batch_hard(embeddings, labels, margin):
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    terms = []
    for a in range(len(x)):
        pos = [np.linalg.norm(x[a] - x[p]) for p in range(len(x)) if p != a and labels[p] == labels[a]]
        neg = [np.linalg.norm(x[a] - x[n]) for n in range(len(x)) if labels[n] != labels[a]]
        if pos and neg:
            terms.append(max(0.0, max(pos) - min(neg) + margin))
    return float(np.mean(terms))


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2, 3, 3], [5, 5, 5, 1, 1, 7, 2, 2]])  # 7: no positive
def test_batch_hard_triplet_loss_matches_loops(labels):
    bench = _bench()
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(len(labels), 5)).astype(np.float64)
    for margin in (0.3, 2.0):  # 2.0: every anchor's hinge is active
        got = bench.batch_hard_triplet_loss(torch.tensor(embeddings), torch.tensor(labels), margin=margin)
        np.testing.assert_allclose(got.item(), _brute_force_batch_hard(embeddings, labels, margin), rtol=1e-5)


def test_batch_hard_triplet_loss_gradient_finite_on_duplicates():
    bench = _bench()
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    bench.batch_hard_triplet_loss(embeddings, torch.tensor([0, 0, 1, 1]), margin=2.0).backward()  # hinge active
    assert torch.isfinite(embeddings.grad).all()
