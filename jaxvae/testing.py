r"""Contract checks for your own components: run them in your test suite (jaxvae runs them on its own).

Each check raises ``AssertionError`` naming the broken property, and returns nothing when all hold:

* :func:`check_model`: a :class:`~jaxvae.models.protocol.Model` (the protocol's shapes, finite values and
  gradients, the same numbers under ``jax.jit`` and ``jax.vmap``, one compilation for new data and keys, decoding
  of prior samples, and, where the model reports analytic KLs, their agreement with the Monte Carlo KL of its own
  densities);
* :func:`check_likelihood`: a :class:`~jaxvae.distributions.likelihoods.Likelihood` (``log_prob`` is the event sum
  of ``log_prob_elements``, shapes, finite gradients, jit/vmap, ``mean``/``sample`` shapes);
* :func:`check_objective`: an :class:`~jaxvae.objectives.losses.Objective` (finite loss and gradients, per-example
  terms ``[B]``, the same loss under ``jax.jit``, ONE compilation for new batches, keys, steps and scheduled
  weights, and a ``vmap`` over stacked weights, as a sweep runs it, equal to each weight alone);
* :func:`check_prior`: a :class:`~jaxvae.models.priors.Prior` (it returns a
  :class:`~jaxvae.distributions.Distribution` of the right shapes whose ``log_prob`` is a normalised density that
  agrees with its ``sample``: the importance-weighted mean and standard deviation under a broad Gaussian proposal
  equal those of its samples).

Each also checks dtypes: outputs follow the floating dtype of the parameters and inputs (a float64 model under
``jax_enable_x64`` computes in float64 throughout; no float32 constant or cast narrows it). Pass ``dtype=None``
to skip that for a deliberately mixed-precision component.

Example::

    from jaxvae.testing import check_model
    check_model(MyModel(..., rngs=nnx.Rngs(0)), x_batch)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.distributions.base import Distribution
from jaxvae.models.priors import Prior
from jaxvae.models.protocol import Model, PureModel, params_dtype, split
from jaxvae.objectives.losses import Objective

Array = jax.Array


def _floating_leaves(tree) -> list[tuple[str, Array]]:
    return [(jax.tree_util.keystr(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
            if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]


def _check_dtype(tree, dtype, what: str) -> None:
    """Every floating leaf of ``tree`` has ``dtype`` (``None``: no check)."""
    if dtype is None:
        return
    bad = {path: str(jnp.result_type(leaf)) for path, leaf in _floating_leaves(tree)
           if jnp.result_type(leaf) != dtype}
    assert not bad, (f"{what} should follow the parameters' and inputs' floating dtype {jnp.dtype(dtype).name}, "
                     f"but has {bad}: a constant or cast of another precision leaks in")


def _check_no_narrower(tree, dtype, what: str) -> None:
    """No floating leaf of ``tree`` is less precise than ``dtype`` (``None``: no check)."""
    if dtype is None:
        return
    bad = {path: str(jnp.result_type(leaf)) for path, leaf in _floating_leaves(tree)
           if jnp.finfo(jnp.result_type(leaf)).bits < jnp.finfo(dtype).bits}
    assert not bad, f"{what} is narrower than the parameters' dtype {jnp.dtype(dtype).name}: {bad}"


def _finite(tree, what: str) -> None:
    bad = [jax.tree_util.keystr(p) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
           if not bool(jnp.all(jnp.isfinite(leaf)))]
    assert not bad, f"{what} has non-finite values at {bad[:5]}"


def check_model(model: Model, x: Array, *, key: Array | None = None, num_samples: int = 3,
                kl_samples: int = 2000, kl_rtol: float = 0.1, dtype: Any = "auto") -> None:
    """Checks the model protocol on a batch ``x [B, *E]`` (use ``B >= 2``).

    ``kl_samples`` posterior samples estimate the KL by Monte Carlo (``mean(log q - log p)``) for comparison with
    the analytic ``kl_terms`` when every group reports one (relative tolerance ``kl_rtol`` on the batch mean, or
    0.05 nats absolute).

    The model is checked in evaluation mode (:meth:`~jaxvae.models.protocol.PureModel.evaluation`: no dropout or
    word dropout, as every jaxvae evaluation runs it), the gradient of its ELBO in training mode.

    ``dtype``: the floating dtype of every output of ``forward`` (log-densities, latents, KL terms, decoder
    outputs) and of ``log_likelihood``; ``"auto"`` (default): the promotion of the parameters' floating dtype and
    ``x``'s (float64 for a float64 model under ``jax_enable_x64``). Prior samples and their images must be no
    narrower than the parameters. ``None`` skips these checks.
    """
    assert isinstance(model, Model), f"{type(model).__name__} is not a jaxvae.Model subclass"
    key = jax.random.key(0) if key is None else key
    x = jnp.asarray(x)
    b = x.shape[0]
    assert tuple(x.shape[1:]) == tuple(model.event_shape), \
        f"x has event shape {x.shape[1:]}, the model {model.event_shape}"
    pure, params = split(model)
    training, pure = pure.training(), pure.evaluation()  # checked as jaxvae evaluates it; the gradient as trained
    k = num_samples
    param_dtype = params_dtype(params)
    if isinstance(dtype, str) and dtype == "auto":
        dtype = jnp.result_type(param_dtype, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else param_dtype
    forward = jax.jit(pure.forward, static_argnums=3)
    out = forward(params, x, key, k)
    _check_dtype((out.log_px_z, out.log_qz_x, out.log_pz, dict(out.z), dict(out.kl_terms), out.decoder_out,
                  out.log_q_groups, out.log_p_groups), dtype, "forward's output")
    for name in ("log_px_z", "log_qz_x", "log_pz"):
        shape = getattr(out, name).shape
        assert shape == (k, b), f"{name} has shape {shape}, expected {(k, b)}"
    assert list(out.z) == [g for g, _ in pure.groups], \
        f"forward's latent groups {list(out.z)} differ from prior_sample's {[g for g, _ in pure.groups]}"
    for g, d in pure.groups:
        assert out.z[g].shape == (k, b, d), f"z[{g!r}] has shape {out.z[g].shape}, expected {(k, b, d)}"
        assert isinstance(out.posteriors[g], Distribution), f"posteriors[{g!r}] is not a Distribution"
        assert isinstance(out.priors[g], Distribution), f"priors[{g!r}] is not a Distribution"
        kl = out.kl_terms[g]
        assert kl is None or kl.shape == (b, d), f"kl_terms[{g!r}] has shape {kl.shape}, expected {(b, d)}"
    _finite((out.log_px_z, out.log_qz_x, out.log_pz, dict(out.z)), "forward's output")
    for name, total, parts in (("log_q_groups", out.log_qz_x, out.log_q_groups),
                               ("log_p_groups", out.log_pz, out.log_p_groups)):
        if parts is not None:
            assert list(parts) == list(out.z), f"{name} has groups {list(parts)}, z has {list(out.z)}"
            np.testing.assert_allclose(sum(parts.values()), total, rtol=1e-5, atol=1e-4,
                                       err_msg=f"{name} does not sum to the total log-density")
    if out.decoder_out is not None:
        assert out.decoder_out.shape[:2 + len(model.event_shape)] == (k, b, *model.event_shape), \
            f"decoder_out has shape {out.decoder_out.shape}, expected [{k}, {b}, *{model.event_shape}, P]"

    eager = pure.forward(params, x, key, k)
    np.testing.assert_allclose(eager.log_weights, out.log_weights, rtol=1e-4, atol=1e-4,
                               err_msg="forward gives different numbers under jax.jit")
    keys = jax.random.split(key, 2)
    batched = jax.jit(jax.vmap(lambda kk: pure.forward(params, x, kk, k).log_weights))(keys)
    np.testing.assert_allclose(batched[0], forward(params, x, keys[0], k).log_weights, rtol=1e-4,
                               atol=1e-4, err_msg="forward gives different numbers under jax.vmap")
    again = forward(params, x + 0.0, jax.random.fold_in(key, 1), k)  # new data and key: no recompilation
    _finite(again.log_weights, "forward's output for a second key")
    assert forward._cache_size() == 1, (
        f"forward compiled {forward._cache_size()} times for one shape: a Python value that changes between "
        "calls is baked into the program (use arrays, not Python scalars, for anything data- or key-dependent)")

    def elbo(p):
        o = training.forward(p, x, key, 1)
        return jnp.mean(o.log_px_z + o.log_pz - o.log_qz_x)

    _finite(jax.jit(jax.grad(elbo))(params), "the gradient of the ELBO with respect to the parameters")

    z = jax.jit(pure.prior_sample_groups, static_argnums=2)(params, jax.random.fold_in(key, 2), 4)
    for g, d in pure.groups:
        assert z[g].shape == (4, d), f"prior_sample()[{g!r}] has shape {z[g].shape}, expected {(4, d)}"
    images = jax.jit(pure.decode_mean)(params, z, jax.random.fold_in(key, 4))
    assert images.shape == (4, *model.event_shape), \
        f"decode_mean(prior_sample(key, 4)) has shape {images.shape}, expected (4, *{model.event_shape})"
    _finite(images, "the images (decode_mean) of prior samples")
    _check_no_narrower((z, images), None if dtype is None else param_dtype,
                       "prior_sample (or decode_mean of its samples)")
    scored = jax.jit(pure.log_likelihood)(params, dict(out.z), x)
    _check_dtype(scored, dtype, "log_likelihood(z, x)")
    np.testing.assert_allclose(scored, out.log_px_z, rtol=1e-4, atol=1e-3,
                               err_msg="log_likelihood(z, x) at forward's own z differs from forward's log_px_z")

    per_dim = out.kl_per_dim()
    if per_dim is not None:
        big = forward(params, x, jax.random.fold_in(key, 3), kl_samples)
        analytic = float(jnp.mean(jnp.sum(big.kl_per_dim(), axis=-1)))
        mc = float(jnp.mean(big.log_qz_x - big.log_pz))
        assert abs(analytic - mc) <= max(kl_rtol * abs(mc), 0.05), (
            f"the analytic KL (kl_terms, batch mean {analytic:.4f} nats) disagrees with the Monte Carlo KL of "
            f"the model's own log q - log p ({mc:.4f} nats, {kl_samples} samples)")


def check_likelihood(likelihood, out: Array, x: Array, *, dtype: Any = "auto") -> None:
    """Checks a likelihood on raw decoder outputs ``out [B, *E, P]`` and data ``x [B, *E]``.

    ``dtype``: the dtype of ``log_prob``, ``log_prob_elements``, ``mean`` and ``sample``; ``"auto"`` (default):
    ``out``'s (the likelihood computes in its parameters' precision, whatever ``x``'s dtype); ``None``: no check.
    """
    event_ndim = x.ndim - 1
    dtype = jnp.result_type(out) if isinstance(dtype, str) and dtype == "auto" else dtype
    lp = likelihood.log_prob(out, x, event_ndim=event_ndim)
    assert lp.shape == x.shape[:1], f"log_prob has shape {lp.shape}, expected {x.shape[:1]}"
    elements = likelihood.log_prob_elements(out, x)
    assert elements.shape == x.shape, f"log_prob_elements has shape {elements.shape}, expected {x.shape}"
    np.testing.assert_allclose(lp, jnp.sum(elements.reshape(x.shape[0], -1), axis=-1), rtol=1e-4, atol=1e-3,
                               err_msg="log_prob is not the event sum of log_prob_elements")
    _finite(lp, "log_prob")
    jitted = jax.jit(lambda o, v: likelihood.log_prob(o, v, event_ndim=event_ndim))(out, x)
    np.testing.assert_allclose(jitted, lp, rtol=1e-5, atol=1e-4, err_msg="log_prob differs under jax.jit")
    vmapped = jax.vmap(lambda o, v: likelihood.log_prob(o[None], v[None], event_ndim=event_ndim)[0])(out, x)
    np.testing.assert_allclose(vmapped, lp, rtol=1e-5, atol=1e-4, err_msg="log_prob differs under jax.vmap")
    _finite(jax.grad(lambda o: jnp.sum(likelihood.log_prob(o, x, event_ndim=event_ndim)))(out),
            "the gradient of log_prob with respect to the decoder output")
    mean_shape = likelihood.mean(out).shape
    assert mean_shape == x.shape, f"mean has shape {mean_shape}, expected {x.shape}"
    sample = likelihood.sample(jax.random.key(0), out)
    assert sample.shape == x.shape, f"sample has shape {sample.shape}, expected {x.shape}"
    _check_dtype({"log_prob": lp, "log_prob_elements": elements, "mean": likelihood.mean(out), "sample": sample},
                 dtype, "the likelihood's outputs")
    _finite(likelihood.log_prob(out, sample.astype(x.dtype), event_ndim=event_ndim),
            "log_prob of the likelihood's own samples")


def check_prior(prior: Prior, *, encode: Callable[[Array], Distribution] | None = None,
                key: Array | None = None, num_samples: int = 200_000, atol: float = 0.05,
                dtype: Any = "auto") -> None:
    """Checks a prior: shapes, and that ``log_prob`` is a normalised density matching ``sample``.

    With a Gaussian proposal :math:`g` of twice the samples' standard deviation, the importance weights
    :math:`w = p(z)/g(z)` must have mean 1 (normalisation) and give :math:`\\mathbb{E}_p[z] = \\mathbb{E}_g[w
    z]` (and the standard deviations likewise) equal to those of the prior's own samples, within a few ``atol``
    (in prior standard deviations). Keep the latent dimension small (<= 8) for a reliable estimate.

    ``dtype``: the dtype of its samples and of ``log_prob`` of them; ``"auto"`` (default): the prior's parameters'
    floating dtype, or JAX's default float dtype for a prior without parameters; ``None``: no check.
    """
    assert isinstance(prior, Prior), f"{type(prior).__name__} is not a jaxvae.models.priors.Prior"
    key = jax.random.key(0) if key is None else key
    p = prior(encode)
    assert isinstance(p, Distribution), f"the prior returned a {type(p).__name__}, not a Distribution"
    d = prior.latent_dim
    assert p.event_shape == (d,) and p.batch_shape == (), \
        f"the prior distribution has event_shape {p.event_shape}, batch_shape {p.batch_shape}; expected {(d,)}, ()"
    k_sample, k_proposal = jax.random.split(key)
    z = jax.jit(p.sample, static_argnums=1)(k_sample, num_samples)
    assert z.shape == (num_samples, d), f"sample(key, n) has shape {z.shape}, expected {(num_samples, d)}"
    zs, lps = p.sample_and_log_prob(k_sample, 16)
    if isinstance(dtype, str) and dtype == "auto":
        own = jax.tree.leaves(nnx.state(prior, nnx.Param))
        dtype = params_dtype(own) if own else jnp.zeros(()).dtype
    _check_dtype({"sample": zs, "log_prob": lps, "log_prob(sample)": p.log_prob(zs)}, dtype,
                 "the prior's samples and log-densities")
    np.testing.assert_allclose(lps, p.log_prob(zs), rtol=1e-5, atol=1e-5,
                               err_msg="sample_and_log_prob's log-density differs from log_prob of its sample")
    mean, std = jnp.mean(z, axis=0), jnp.std(z, axis=0)
    scale = 2.0 * std + 1e-3
    eps = jax.random.normal(k_proposal, (num_samples, d))
    g = mean + scale * eps
    log_g = jnp.sum(-0.5 * eps**2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1)
    log_w = p.log_prob(g) - log_g
    _finite(log_w, "log_prob on proposal points")
    w = jnp.exp(log_w)
    total = float(jnp.mean(w))
    assert abs(total - 1.0) < 5 * atol, f"log_prob does not integrate to 1 (importance estimate {total:.4f})"
    weighted_mean = jnp.sum(w[:, None] * g, axis=0) / jnp.sum(w)
    gap = np.asarray(jnp.abs(weighted_mean - mean) / std)
    assert np.all(gap < 5 * atol), (
        f"the mean implied by log_prob ({np.asarray(weighted_mean)}) differs from the mean of sample() "
        f"({np.asarray(mean)}) by {gap.max():.3f} standard deviations")
    weighted_std = jnp.sqrt(jnp.sum(w[:, None] * jnp.square(g - weighted_mean), axis=0) / jnp.sum(w))
    ratio = np.asarray(weighted_std / std)
    assert np.all(np.abs(ratio - 1.0) < 4 * atol), (
        f"the standard deviations implied by log_prob ({np.asarray(weighted_std)}) differ from those of "
        f"sample() ({np.asarray(std)})")


def check_objective(objective: Objective, model: PureModel, params: Any, x: Array, *, key: Array | None = None,
                    rtol: float = 1e-5) -> None:
    """Checks an objective (what a player trains; :mod:`jaxvae.objectives.factory` builds the built-in ones) on a
    batch ``x [B, *E]`` of ``model`` with ``params``:

    * ``loss`` is a finite scalar with finite gradients; the output's ``elbo``, ``recon``, ``kl`` (where given) are
      ``[B]``; ``update`` returns a state of the same structure as ``init``'s;
    * ``jax.jit`` of the loss equals the loss (``rtol``) and is traced ONCE for other batches of the same shape,
      other keys, steps and scheduled weights (a value that changes its type between calls would recompile the
      training step every time);
    * ``jax.vmap`` over two stacked copies of the scheduled weights, one of them scaled, equals the loss with each
      copy alone: models of a sweep may differ in these weights within one compiled program.
    """
    key = jax.random.key(0) if key is None else key
    k1, k2 = jax.random.split(key)
    state = objective.init(params)
    step = jnp.asarray(3, jnp.int32)
    hyper = {k: jnp.asarray(v, jnp.float32) for k, v in objective.hyper(step).items()}

    def loss(params, state, x, key, step, hyper):
        return objective.loss(params, state, x, key, step, hyper)

    (value, out), grads = jax.value_and_grad(loss, has_aux=True)(params, state, x, k1, step, hyper)
    assert jnp.shape(value) == (), f"the loss must be a scalar; got shape {jnp.shape(value)}"
    _finite(value, "the loss")
    _finite(grads, "the gradients")
    batch = jax.tree.leaves(x)[0].shape[0]
    chex.assert_shape([t for t in (out.elbo, out.recon, out.kl) if t is not None], (batch,))  # [B] each
    new_state = objective.update(state, out, step, hyper)
    assert jax.tree.structure(new_state) == jax.tree.structure(state), (
        "update must return a state of the structure init gives")

    traces = []

    def counted(*args):
        traces.append(1)
        return loss(*args)

    traced = jax.jit(counted)
    chex.assert_trees_all_close(traced(params, state, x, k1, step, hyper)[0], value, rtol=rtol)
    other = {k: v * 1.5 + 0.25 for k, v in hyper.items()}
    traced(params, state, x, k2, step + 7, other)  # new key, step and weights
    traced(params, state, jax.tree.map(lambda a: a[::-1], x), k2, step, hyper)  # another batch, same shape
    assert len(traces) == 1, (f"the jitted loss was traced {len(traces)} times for one shape: an argument changes "
                              "its type or structure between calls, and the training step would recompile")

    if hyper:
        stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), hyper, other)
        swept = jax.vmap(lambda h: loss(params, state, x, k1, step, h)[0])(stacked)
        alone = jnp.stack([loss(params, state, x, k1, step, h)[0] for h in (hyper, other)])
        np.testing.assert_allclose(swept, alone, rtol=1e-4, atol=1e-4,
                                   err_msg="a vmap over stacked scheduled weights (a sweep) differs from each "
                                           "weight alone")
