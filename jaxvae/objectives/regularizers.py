r"""Regularizers that act on the gradients, as optax transformations.

:func:`spectral_regularization` is NVAE's spectral regularization (Vahdat & Kautz 2020, Sec. 3.2; Yoshida &
Miyato 2017): the loss gains :math:`\lambda_t \sum_i \sigma_{\max}(W_i)`, the sum over every weight matrix of its
largest singular value, which bounds the Lipschitz constant of the network and keeps a deep hierarchy's KL terms
from jumping. :math:`\sigma_{\max}` is estimated by power iteration with persistent vectors (one iteration per
step), so its gradient :math:`\partial\sigma/\partial W = u v^\top` costs two matrix-vector products per matrix.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


class SpectralRegState(NamedTuple):
    """The state of :func:`spectral_regularization`: the step count and, per weight matrix, the power iteration's
    left and right singular vector estimates (``None`` for leaves that are not matrices: biases, scalars)."""

    count: Array
    u: optax.Params
    v: optax.Params


def _as_matrix(w: Array) -> Array:
    """A kernel ``[..., in, out]`` (dense ``[in, out]``, conv ``[kh, kw, in, out]``) as ``[out, prod(rest)]``,
    NVAE's ``weight.view(out, -1)`` (the singular values do not depend on the order of the flattened axes)."""
    return jnp.reshape(w, (-1, w.shape[-1])).T


def _is_matrix(w: Array) -> bool:
    return jnp.ndim(w) >= 2


def _normalize(x: Array) -> Array:
    return x / (jnp.linalg.norm(x) + 1e-12)


def _power_iteration(m: Array, u: Array, v: Array, iterations: int) -> tuple[Array, Array]:
    for _ in range(iterations):
        v = _normalize(m.T @ u)
        u = _normalize(m @ v)
    return u, v


@functools.partial(jax.jit, static_argnums=2)
def _initial_vectors(m: Array, key: Array, iterations: int) -> tuple[Array, Array]:
    """Power iteration from a fixed random start, compiled (run eagerly, its small ops would dispatch one by one
    for every matrix of the model each time an optimizer state is built)."""
    u0 = _normalize(jax.random.normal(key, (m.shape[0],)))
    return _power_iteration(m, u0, _normalize(m.T @ u0), iterations)


def spectral_norms(params: optax.Params, state: SpectralRegState) -> optax.Params:
    r"""The current estimate :math:`\sigma = u^\top W v` of every weight matrix's largest singular value (``None``
    for other leaves)."""
    return jax.tree.map(lambda w, u, v: u @ _as_matrix(w) @ v if u is not None else None, params, state.u, state.v,
                        is_leaf=lambda x: x is None)


def spectral_regularization(weight: float | optax.Schedule, *, power_iterations: int = 1,
                            init_iterations: int = 20) -> optax.GradientTransformation:
    r"""Adds the gradient of :math:`\lambda_t \sum_i \sigma_{\max}(W_i)` to the updates (place it first in a chain,
    before the optimizer, as a term of the loss would be).

    Args:
      weight: :math:`\lambda`, a number or an optax schedule of the step (NVAE anneals it during the KL warm-up:
        :func:`spectral_weight_schedule`).
      power_iterations: iterations per step, continuing from the last step's vectors.
      init_iterations: iterations from the fixed starting vectors at initialization.

    Every leaf with two or more axes is a weight matrix; the state holds one ``u [out]`` and ``v [in * k * k]`` per
    matrix. The result depends only on the parameters and the step: the starting vectors are fixed (a key of 0
    folded with the leaf's index), so runs and resumes reproduce.
    """
    schedule = weight if callable(weight) else (lambda count: jnp.asarray(weight, jnp.float32))

    def init(params):
        leaves, treedef = jax.tree.flatten(params)
        us, vs = [], []
        for i, w in enumerate(leaves):
            if not _is_matrix(w):
                us.append(None), vs.append(None)
                continue
            m = _as_matrix(jnp.asarray(w, jnp.float32))
            u, v = _initial_vectors(m, jax.random.fold_in(jax.random.key(0), i), init_iterations)
            us.append(u), vs.append(v)
        return SpectralRegState(jnp.zeros([], jnp.int32), jax.tree.unflatten(treedef, us),
                                jax.tree.unflatten(treedef, vs))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("spectral_regularization needs the parameters: call update(updates, state, params).")
        lam = schedule(state.count)
        leaves, treedef = jax.tree.flatten(params)
        upd = treedef.flatten_up_to(updates)
        us = treedef.flatten_up_to(state.u)
        vs = treedef.flatten_up_to(state.v)
        new_upd, new_u, new_v = [], [], []
        for w, g, u, v in zip(leaves, upd, us, vs):
            if u is None:
                new_upd.append(g), new_u.append(None), new_v.append(None)
                continue
            m = jax.lax.stop_gradient(_as_matrix(w.astype(jnp.float32)))
            u, v = _power_iteration(m, u, v, power_iterations)
            grad_sigma = jnp.reshape(jnp.outer(u, v).T, w.shape)  # d(u^T W v)/dW = u v^T, back in kernel layout
            new_upd.append(g + (lam * grad_sigma).astype(g.dtype)), new_u.append(u), new_v.append(v)
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)
        return unflat(new_upd), SpectralRegState(state.count + 1, unflat(new_u), unflat(new_v))

    return optax.GradientTransformation(init, update)


def spectral_weight_schedule(weight: float, init_weight: float = 0.0, warmup_steps: int = 0) -> optax.Schedule:
    r""":math:`\lambda_t`: NVAE's annealing, geometric from ``init_weight`` to ``weight`` over ``warmup_steps``
    (:math:`\log\lambda_t = (1 - r)\log\lambda_0 + r\log\lambda`, ``r = min(t / warmup_steps, 1)``), or the
    constant ``weight`` when ``init_weight`` or ``warmup_steps`` is 0. NVAE: 10 down to 1e-2 over the KL
    warm-up."""
    if not (init_weight > 0 and warmup_steps > 0 and weight > 0):
        return lambda count: jnp.asarray(weight, jnp.float32)
    lo, hi = jnp.log(init_weight), jnp.log(weight)

    def schedule(count):
        r = jnp.minimum(count / warmup_steps, 1.0)
        return jnp.exp((1.0 - r) * lo + r * hi).astype(jnp.float32)

    return schedule
