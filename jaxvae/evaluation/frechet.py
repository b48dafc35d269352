r"""A Fréchet distance between image sets in the feature space of a small classifier that jaxvae trains itself.

This is a *proxy* for sample quality on MNIST-like data, in the spirit of the FID (Heusel et al. 2017), NOT the
Inception FID: the features are the 128-unit penultimate layer of an MLP classifier (784-256-128-10) trained
for a few epochs on the training images. Numbers are comparable only with numbers from the same classifier
(same data, seed and settings; the cache key covers all of them).

.. math::
    d^2 = \lVert \mu_1 - \mu_2 \rVert^2
          + \mathrm{tr}\left(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1 \Sigma_2)^{1/2}\right)

The classifier is cached as a ``.npz`` of plain arrays (no pickle) under ``~/.cache/jaxvae/classifiers``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvae.data.storage import cache_root
from jaxvae.rundir.writers import atomic_write_bytes

SIZES = (784, 256, 128, 10)


def _init(key: jax.Array) -> dict[str, jax.Array]:
    params = {}
    for i, (a, b) in enumerate(itertools.pairwise(SIZES)):
        params[f"w{i}"] = jax.random.normal(jax.random.fold_in(key, i), (a, b)) * jnp.sqrt(2.0 / a)
        params[f"b{i}"] = jnp.zeros((b,))
    return params


def features(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Penultimate-layer features ``[N, 128]`` of images ``[N, ...]`` with values in [0, 1]."""
    h = x.reshape(x.shape[0], -1)
    for i in range(len(SIZES) - 2):
        h = jax.nn.relu(h @ params[f"w{i}"] + params[f"b{i}"])
    return h


def _logits(params, x):
    last = len(SIZES) - 2
    return features(params, x) @ params[f"w{last}"] + params[f"b{last}"]


def train_classifier(x: np.ndarray, y: np.ndarray, *, seed: int = 0, epochs: int = 5, batch_size: int = 128,
                     cache_dir: str | os.PathLike | None = None) -> dict[str, jax.Array]:
    """Trains (or loads from the cache) the feature classifier on images ``x [N, ...]`` and labels ``y [N]``."""
    digest = hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()[:10_000_000])
    digest.update(np.ascontiguousarray(y).tobytes())
    digest.update(f"{SIZES}-{seed}-{epochs}-{batch_size}-{x.shape}".encode())
    cache = Path(cache_dir) if cache_dir else cache_root() / "classifiers"
    path = cache / f"mlp-{digest.hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            return {k: jnp.asarray(f[k]) for k in f.files}
    params = _init(jax.random.key(seed))
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(_logits(p, xb), yb).mean())(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float32)
    for _ in range(epochs):
        perm = rng.permutation(x.shape[0])
        for b in range(x.shape[0] // batch_size):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            params, opt_state, _ = step(params, opt_state, x[idx], y[idx])
    cache.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in params.items()})
    atomic_write_bytes(path, buf.getvalue())
    return params


def predict(params: dict[str, jax.Array], x: np.ndarray) -> np.ndarray:
    """The classifier's most likely class of each image ``x [N, ...]``, int ``[N]``."""
    return np.concatenate([np.asarray(jnp.argmax(_logits(params, x[i:i + 1000]), -1))
                           for i in range(0, x.shape[0], 1000)])


def accuracy(params: dict[str, jax.Array], x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict(params, x) == y))


def dataset_features(params: dict[str, jax.Array], x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    fn = jax.jit(features)
    return np.concatenate([np.asarray(fn(params, x[i:i + batch_size])) for i in range(0, x.shape[0], batch_size)])


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, F]`` (float64, eigen-based sqrtm)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    # tr((S1 S2)^{1/2}) = sum of sqrt(eigenvalues of S1^{1/2} S2 S1^{1/2}), a symmetric PSD matrix.
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_sqrt = np.sum(np.sqrt(np.clip(middle, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
