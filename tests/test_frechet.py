"""The Fréchet distance proxy: zero for identical sets, the closed form for Gaussians, scipy's sqrtm agreement."""

import numpy as np
from scipy import linalg

from jaxvae.evaluation import frechet


def test_frechet_distance_matches_scipy_and_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(3000, 5)) * 2.0 + 1.0
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    np.testing.assert_allclose(frechet.frechet_distance(a, b), expected, rtol=1e-6)
    assert abs(frechet.frechet_distance(a, a)) < 1e-6
    # Isotropic Gaussians N(0, I) vs N(m, 4 I) in 5-D: |m|^2 + 5 (1 + 4 - 2 * 2) = |m|^2 + 5, up to sampling error.
    x = rng.normal(size=(200_000, 5))
    y = rng.normal(size=(200_000, 5)) * 2.0 + 1.0
    np.testing.assert_allclose(frechet.frechet_distance(x, y), 5.0 + 5.0, rtol=0.01)


def test_classifier_trains_caches_and_separates_classes(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    x = (rng.uniform(size=(600, 784)) < 0.1).astype(np.float32)
    x[np.arange(600), y * 100] = 1.0  # a class-revealing pixel
    params = frechet.train_classifier(x, y, epochs=30, cache_dir=tmp_path)
    assert frechet.accuracy(params, x, y) > 0.9
    assert len(list(tmp_path.glob("mlp-*.npz"))) == 1
    again = frechet.train_classifier(x, y, epochs=30, cache_dir=tmp_path)  # loaded, not retrained
    np.testing.assert_array_equal(np.asarray(again["w0"]), np.asarray(params["w0"]))
