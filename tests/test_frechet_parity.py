"""The Frechet distance against pytorch-fid's `calculate_frechet_distance` and closed forms."""

import sys
import types

import numpy as np
import pytest

from vidiff.metrics import frechet_distance


class _Stub(types.ModuleType):
    """A module whose every attribute is a sub-module (lower case) or an empty class."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _Stub(f"{self.__name__}.{name}") if name[0].islower() else type(name, (), {})
        setattr(self, name, value)
        return value


def _pytorch_fid():
    """pytorch-fid's fid_score module. It imports torchvision at load time, which
    `calculate_frechet_distance` does not use; a stub stands in (no CPU torchvision exists).
    Install it with `pip install --no-deps pytorch-fid` (its torchvision would replace torch)."""
    pytest.importorskip("scipy")
    if "torchvision" not in sys.modules:
        stub = _Stub("torchvision")
        sys.modules["torchvision"] = stub
        sys.modules["torchvision.transforms"] = stub.transforms
        sys.modules["torchvision.models"] = stub.models
    try:
        return pytest.importorskip("pytorch_fid.fid_score")
    finally:
        for name in ["torchvision", "torchvision.transforms", "torchvision.models"]:
            if isinstance(sys.modules.get(name), _Stub):
                del sys.modules[name]


@pytest.mark.parametrize("dim,n", [(8, 100), (64, 500), (256, 1000)])
def test_matches_pytorch_fid(dim, n):
    reference = _pytorch_fid().calculate_frechet_distance
    rng = np.random.default_rng(dim)
    a = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) * 0.3
    b = rng.standard_normal((n, dim)) * 1.2 + 0.1
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    theirs = reference(mu1, s1, mu2, s2)
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_closed_form_for_known_gaussians():
    """Commuting covariances: ||mu1 - mu2||^2 + sum over eigenvalues (sqrt(s1) - sqrt(s2))^2."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    l1, l2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(l1) - np.sqrt(l2)) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("n1,n2", [(20, 200), (200, 20), (20, 30)])
def test_singular_covariances_match_pytorch_fid(n1, n2):
    """Fewer samples than dimensions: one (or both) covariances singular, which takes the
    Cholesky factor of the other one (or the eigendecomposition when both are singular)."""
    reference = _pytorch_fid().calculate_frechet_distance
    rng = np.random.default_rng(n1 + n2)
    a, b = rng.standard_normal((n1, 64)), rng.standard_normal((n2, 64)) * 0.8 + 0.2
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference(mu1, s1, mu2, s2),
                                                               rel=1e-6)
