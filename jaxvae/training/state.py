"""The state of training: the :class:`TrainState` pytree (checkpointed whole) and the parameters' moving
average that evaluation reads."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxvae.models.protocol import Params, merge_trees, partition_tree

Array = jax.Array


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree (checkpointed whole).

    Attributes:
      step: number of completed steps, int32 ``[]``.
      params: model parameters (a nested dict of arrays).
      opt_state: Optax state.
      obj_state: objective / KL-controller state (``{}`` for stateless objectives).
      key: the run's base PRNG key (never split in place; per-step keys are ``fold_in(key, step)``).
      nonfinite_total: skipped updates so far, int32 ``[]``.
      nonfinite_consecutive: skipped updates in a row, int32 ``[]``.
      model_state: the model's non-gradient variables (``nnx.BatchStat``-s, codebook statistics: every variable
        that is not an ``nnx.Param``, :meth:`~jaxvae.models.protocol.PureModel.split_state`), updated inside the
        step by the forward pass or a :class:`~jaxvae.training.StateUpdate`; ``{}`` for a model without any.

    With one player (every built-in preset) ``opt_state`` and ``obj_state`` are that player's; a program of
    several players (:class:`~jaxvae.training.Program`) keeps ``{player name: state}`` in each.
    """

    step: Array
    params: Params
    opt_state: optax.OptState
    obj_state: Any
    key: Array
    nonfinite_total: Array
    nonfinite_consecutive: Array
    model_state: Params = {}  # noqa: RUF012 (never mutated; old call sites build TrainState from 7 fields)


class EmaParamsState(NamedTuple):
    """The state of :func:`ema_params`: the exponential moving average of the parameters."""

    ema: Params


def ema_params(decay: float) -> optax.GradientTransformation:
    r"""An optax transformation that leaves the updates alone and tracks the parameters' exponential moving
    average in its state (VDVAE, Child 2021, evaluates with ``decay = 0.9999``):

    .. math:: \bar\theta_0 = \theta_0, \qquad \bar\theta_{t+1} = d\,\bar\theta_t + (1 - d)\,\theta_{t+1}.

    Put it last in a chain (it needs the final updates); a skipped step (non-finite, or above the skip threshold)
    does not run the optimizer, so it does not move the average either. The average lives in the optimizer
    state: checkpointed, sharded like the parameters, and read back with :func:`evaluation_params`."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"The EMA decay must be in (0, 1); got {decay}.")

    def init(params):
        return EmaParamsState(jax.tree.map(lambda p: jnp.array(p, copy=True), params))

    def update(updates, state, params=None):
        new = optax.apply_updates(params, updates)
        return updates, EmaParamsState(jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, new))

    return optax.GradientTransformation(init, update)


def evaluation_params(state: TrainState) -> Params:
    """The variables to evaluate: the parameters (their moving average, where an optimizer tracks one with
    :func:`ema_params`) joined with the model's non-gradient state (``state.model_state``)."""
    found = [s.ema for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: isinstance(s, EmaParamsState))
             if isinstance(s, EmaParamsState)]
    params = state.params
    if len(found) == 1 and jax.tree.structure(found[0]) == jax.tree.structure(params):
        params = found[0]
    elif found:  # several players, each with the average of the parameters it trains
        averaged = merge_trees(*found)
        paths = {tuple(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(averaged)[0]}
        params = merge_trees(averaged, partition_tree(params, paths.__contains__)[1])
    return merge_trees(params, state.model_state) if state.model_state else params
