"""The compiled parts of training: the train step of one player (the program of every built-in preset,
:mod:`jaxvae.training.program`) and the chunks that loop it on the device.

Everything here is a pure function over pytrees; the host loop in :mod:`jaxvae.training.loop` only calls them.

* Per-step randomness comes from ``jax.random.fold_in(state.key, state.step)``, so a resumed run draws exactly
  the numbers an uninterrupted run would have drawn.
* An update whose loss or gradients are not finite is skipped (parameters, optimizer and objective state are
  kept) and counted in ``nonfinite_total`` / ``nonfinite_consecutive``; the host loop stops after too many in a
  row.
* Dynamic binarization (the IWAE-paper protocol) happens inside the step: ``x ~ Bernoulli(grey values)`` with a
  key derived from the step, so it is re-sampled every epoch and reproduced exactly on resume.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxvae import sharding
from jaxvae.models.protocol import Params, PureModel
from jaxvae.objectives.losses import Objective
from jaxvae.training.program import Program, init_program_state, make_program_step, step_metrics
from jaxvae.training.state import EmaParamsState, TrainState, ema_params, evaluation_params

__all__ = ["EmaParamsState", "TrainState", "apply_or_skip", "ema_params", "evaluation_params", "init_train_state",
           "jit_train_chunk", "jit_train_step", "make_train_chunk", "make_train_step",
           "make_train_step_with_hyper",
           "step_metrics"]

Array = jax.Array
Metrics = dict[str, Array]


def init_train_state(model: PureModel, optimizer: optax.GradientTransformation, objective: Objective,
                     key: Array) -> TrainState:
    """A fresh state of the one-player program (:func:`jaxvae.training.init_program_state`): parameters from
    ``fold_in(key, 0)``, the per-step stream from ``fold_in(key, 1)``."""
    return init_program_state(model, Program.single(objective, optimizer), key)


def make_train_step(model: PureModel, objective: Objective, optimizer: optax.GradientTransformation, *,
                    dynamic_binarization: bool = False, skip_threshold: float | None = None
                    ) -> Callable[[TrainState, Array], tuple[TrainState, Metrics]]:
    """The (unjitted) train step ``(state, batch [B, *E]) -> (state, metrics)``; jit or scan it.

    ``skip_threshold``: skip the update (VDVAE's update skipping, Child 2021) when the gradient's global norm
    exceeds it; skipped updates are counted with the non-finite ones (see :func:`make_train_step_with_hyper`).
    """
    step_with_hyper = make_train_step_with_hyper(model, objective, optimizer,
                                                 dynamic_binarization=dynamic_binarization,
                                                 skip_threshold=skip_threshold)

    def train_step(state: TrainState, batch: Array) -> tuple[TrainState, Metrics]:
        return step_with_hyper(state, batch, objective.hyper(state.step))

    return train_step


def make_train_step_with_hyper(model: PureModel, objective: Objective, optimizer: optax.GradientTransformation, *,
                               dynamic_binarization: bool = False, skip_threshold: float | None = None
                               ) -> Callable[[TrainState, Array, dict[str, Array]], tuple[TrainState, Metrics]]:
    """The train step with the scheduled weights passed in: ``(state, batch, hyper) -> (state, metrics)``.

    This is the form :mod:`jaxvae.runs.sweep` ``vmap``-s over many models (``hyper`` values stacked ``[N]``): the
    step of the one-player program (:func:`jaxvae.training.make_program_step`).

    An update is skipped (parameters, optimizer and controller state unchanged; ``nonfinite_total`` and
    ``nonfinite_consecutive`` incremented) when the loss or the gradient is not finite, or, with
    ``skip_threshold``, when the gradient's global norm exceeds it (VDVAE, Child 2021: a rare huge gradient
    would otherwise throw a deep hierarchy off). The metric ``skipped`` is 1 for a skipped step and, with a
    threshold, ``skipped_grad_norm`` is 1 for a step skipped for its norm alone.
    """
    del model  # the objective closes over it; kept in the signature for readability at call sites
    return make_program_step(Program.single(objective, optimizer), dynamic_binarization=dynamic_binarization,
                             skip_threshold=skip_threshold)


def apply_or_skip(state: TrainState, ok: Array, grads: Params, loss: Array, out: Any, optimizer: Any,
                  objective: Objective, hyper: dict[str, Array]) -> TrainState:
    """``state`` after the optimizer's update with ``grads`` (and the objective's state update) where ``ok``, else
    with the skipped update counted (``nonfinite_total`` and ``nonfinite_consecutive`` incremented). The step
    counter is the caller's."""

    def apply(state: TrainState) -> TrainState:
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, value=loss)
        return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                              obj_state=objective.update(state.obj_state, out, state.step, hyper),
                              nonfinite_consecutive=jnp.zeros_like(state.nonfinite_consecutive))

    def skip(state: TrainState) -> TrainState:
        return state._replace(nonfinite_total=state.nonfinite_total + 1,
                              nonfinite_consecutive=state.nonfinite_consecutive + 1)

    # lax.cond runs one branch only, so a skipped update costs nothing and a normal one no extra select.
    return jax.lax.cond(ok, apply, skip, state)


def make_train_chunk(train_step: Callable[..., tuple[TrainState, Metrics]], batch_size: int,
                     num_steps: int | None = None, *, batch_sharding: jax.sharding.Sharding | None = None,
                     pass_data: bool = False, carry_sums: bool = False
                     ) -> Callable[..., tuple[TrainState, Metrics]]:
    """Train steps as one compiled loop over a dataset that lives on the device.

    The returned function ``(state, data [N, *E], perm [M] int32, first_batch [], num_steps []) -> (state, mean
    metrics)`` takes batch ``b`` as ``data[perm[b * B:(b + 1) * B]]`` for ``b = first_batch, ..., first_batch +
    num_steps - 1`` and averages the metrics over those steps. ``num_steps`` is a traced argument, so ONE
    compiled program serves chunks of every length (the host loop sizes chunks by their wall time, see
    :mod:`jaxvae.training.chunks`); with ``num_steps`` given here, the function takes four arguments and always
    runs that many steps. With ``carry_sums``, it takes one more argument, ``sums`` (the metrics summed over
    earlier steps, or None for zeros), and returns ``(state, sums)`` with this chunk's steps added one at a time,
    so a total over several calls is bitwise the same however the steps were split between them. Jit it with
    ``donate_argnums=0`` (or use :func:`jit_train_chunk`). With ``batch_sharding`` (a mesh), each gathered batch
    is split over the mesh's ``data`` axis (the dataset itself is replicated on every device). With
    ``pass_data``, the step is called as ``train_step(state, batch, data)`` (the aggressive step of
    :mod:`jaxvae.training.aggressive` draws more batches).
    """

    def gather(data: Array, perm: Array, b: Array) -> Array:
        idx = jax.lax.dynamic_slice_in_dim(perm, b * batch_size, batch_size)
        batch = jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)  # [B, *E] (each leaf of a pytree)
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return batch

    def step(state: TrainState, data: Array, batch: Array) -> tuple[TrainState, Metrics]:
        return train_step(state, batch, data) if pass_data else train_step(state, batch)

    def summed(state: TrainState, data: Array, perm: Array, first_batch: Array, steps: Array,
               sums: Metrics | None = None) -> tuple[TrainState, Metrics]:
        if sums is None:
            shapes = jax.eval_shape(step, state, data, gather(data, perm, first_batch))[1]
            sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(i, carry):
            state, sums = carry
            state, metrics = step(state, data, gather(data, perm, first_batch + i))
            return state, jax.tree.map(jnp.add, sums, metrics)

        return jax.lax.fori_loop(0, steps, body, (state, sums))

    def chunk(state: TrainState, data: Array, perm: Array, first_batch: Array,
              steps: Array) -> tuple[TrainState, Metrics]:
        state, sums = summed(state, data, perm, first_batch, steps)
        return state, jax.tree.map(lambda s: s / steps, sums)

    if carry_sums:
        if num_steps is not None:
            raise ValueError("make_train_chunk: carry_sums takes the step count as an argument; leave num_steps "
                             "out.")
        return summed
    if num_steps is None:
        return chunk
    return lambda state, data, perm, first_batch: chunk(state, data, perm, first_batch, jnp.int32(num_steps))


def jit_train_step(train_step: Callable[[TrainState, Array], tuple[TrainState, Metrics]],
                   state_shardings: Any = None, batch_sharding: jax.sharding.Sharding | None = None
                   ) -> Callable[[TrainState, Array], tuple[TrainState, Metrics]]:
    """The train step compiled once with explicit shardings and the state donated.

    ``state_shardings`` (a :class:`TrainState` of shardings, see :func:`jaxvae.sharding.train_state_shardings`)
    and ``batch_sharding`` (``P("data", ...)``) fix the layout of the inputs and outputs, so every step reuses
    one executable; metrics come back replicated. Without shardings this is ``jax.jit(step, donate_argnums=0)``.
    """
    if state_shardings is None:
        return jax.jit(train_step, donate_argnums=0)
    # A labelled batch has a sharding per leaf (jaxvae.models.conditional); they share one mesh.
    metrics_sharding = sharding.replicated(jax.tree.leaves(batch_sharding)[0].mesh)
    return jax.jit(train_step, in_shardings=(state_shardings, batch_sharding),
                   out_shardings=(state_shardings, metrics_sharding), donate_argnums=0)


def jit_train_chunk(chunk: Callable[[TrainState, Array, Array, Array], tuple[TrainState, Metrics]],
                    state_shardings: Any = None, mesh: jax.sharding.Mesh | None = None
                    ) -> Callable[[TrainState, Array, Array, Array], tuple[TrainState, Metrics]]:
    """A :func:`make_train_chunk` function (of dynamic length, with or without ``carry_sums``) compiled with
    explicit shardings (dataset, permutation, batch index, step count and sums replicated; metrics replicated)
    and the state donated."""
    if state_shardings is None:
        return jax.jit(chunk, donate_argnums=0)
    rep = sharding.replicated(mesh)
    num_args = len(inspect.signature(chunk).parameters)
    return jax.jit(chunk, in_shardings=(state_shardings, *[rep] * (num_args - 1)),
                   out_shardings=(state_shardings, rep), donate_argnums=0)
