"""Training programs: the players of one training step and the model's non-gradient state.

A :class:`Program` declares what ONE jitted step does (the design's engine):

* **players** (:class:`Player`): each a named subset of the parameters, its own loss (an
  :class:`~jaxvae.objectives.Objective`), its own optax chain and its own :class:`Schedule` (every step, every k
  steps, alternating, from step s). Players run in their order within a step; a player sees the parameters as the
  players before it left them (the alternating updates of GAN training), and differentiates its loss with respect
  to its own parameters only (the others are constants to it).
* **state**: the variables of the model that are not ``nnx.Param`` (``TrainState.model_state``: batch statistics,
  codebook counts, usage queues), updated by the forward pass of a player's loss (:attr:`ModelOutput.state
  <jaxvae.models.protocol.ModelOutput>`) and by explicit :class:`StateUpdate`-s, never by gradients.

The one-player program (:meth:`Program.single`) is what every built-in preset trains: its step is the step jaxvae
always had, bit for bit. Everything the engine does with a step (scan chunks, sweeps as vmapped stacked states,
mesh shardings, checkpoints, bitwise resume) works for every program, because a program's state is one pytree
(:class:`~jaxvae.training.TrainState`) and its step a pure function.

Randomness: the step's key is ``fold_in(state.key, step)``; player ``i`` draws from ``fold_in(step_key, salt)``
with the salt 0 for the first player (the key of the one-player step) and ``16 + i`` for the others, state update
``j`` from ``32 + j``, dynamic binarization from 1.

Metrics: the first player's are the run's (``loss``, ``elbo``, ``recon``, ``kl``, ``grad_norm``, its scheduled
weights); every other player's carry its name as a prefix (``critic_loss``, ``critic_grad_norm``), and a player
that does not run every step adds ``<name>_active`` (1 in the steps it ran). :func:`per_active_step` turns the
means over a logging window into means over the steps a player ran.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvae.config import Config
from jaxvae.data.batches import map_images
from jaxvae.errors import ConfigError
from jaxvae.models.factory import builder_reference, resolve_builder
from jaxvae.models.protocol import Params, PureModel, merge_trees, partition_tree
from jaxvae.objectives.losses import Objective
from jaxvae.training.state import TrainState

Array = jax.Array
Metrics = dict[str, Array]

# Salts of the per-step key (see the module docstring).
OBJECTIVE_SALT, BINARIZE_SALT = 0, 1
_PLAYER_SALT, _STATE_SALT = 16, 32
ACTIVE = "_active"  # the suffix of a scheduled player's activity metric


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a player (or a state update) runs: at the steps ``s >= start`` with ``s % every == phase``.

    ``Schedule()`` runs every step; ``Schedule(every=2, phase=1)`` every other step (two players alternating:
    phases 0 and 1); ``Schedule(every=5)`` every 5th step (a critic trained k times less often);
    ``Schedule(start=5000)`` from step 5000 on (the latent-diffusion recipe switches its discriminator on late).
    """

    every: int = 1
    phase: int = 0
    start: int = 0

    def __post_init__(self) -> None:
        for name in ("every", "phase", "start"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"Schedule.{name} must be an integer; got {value!r}.")
        if self.every < 1:
            raise ValueError(f"Schedule.every must be at least 1; got {self.every}.")
        if not 0 <= self.phase < self.every:
            raise ValueError(f"Schedule.phase must be in [0, every={self.every}); got {self.phase}.")
        if self.start < 0:
            raise ValueError(f"Schedule.start must be >= 0; got {self.start}.")

    @property
    def always(self) -> bool:
        """Whether it runs at every step."""
        return self.every == 1 and self.start == 0

    def active(self, step: Array) -> Array:
        """Whether it runs at ``step`` (a traced int32 ``[]``)."""
        on = step >= self.start
        return on & (step % self.every == self.phase) if self.every > 1 else on

    def describe(self) -> str:
        parts = ["every step" if self.every == 1 else f"every {self.every} steps (phase {self.phase})"]
        if self.start:
            parts.append(f"from step {self.start}")
        return " ".join(parts)


ParamSelection = None | Sequence[str] | Callable[[tuple[Any, ...]], bool]


@dataclasses.dataclass(frozen=True)
class Player:
    """One player of a training program.

    Attributes:
      name: a Python identifier (it prefixes the player's metrics and keys its optimizer state).
      objective: its loss as an :class:`~jaxvae.objectives.Objective`; ``loss(variables, state, batch, key, step,
        hyper)`` receives all the model's variables (its own parameters, the other players' as constants, and
        the non-gradient state) and returns ``(loss [], ObjectiveOutput)``; a loss that is not a bound leaves the
        output's ``elbo``, ``recon``, ``kl`` ``None`` and reports its terms in ``metrics``.
      optimizer: its optax chain (its state holds only its own parameters).
      params: the parameters it trains: ``None`` for all of them, top-level names of the parameter tree
        (``("critic",)``), or a predicate on a parameter's path (``lambda path: path[0] != "critic"``).
      schedule: when it runs (:class:`Schedule`); the first player of a program runs every step.
    """

    name: str
    objective: Objective
    optimizer: optax.GradientTransformation
    params: ParamSelection = None
    schedule: Schedule = Schedule()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"A player's name must be a Python identifier (it prefixes its metrics); got "
                             f"{self.name!r}.")
        if isinstance(self.params, str):
            raise TypeError(f"Player {self.name!r}: params={self.params!r} is one string; give a tuple of "
                            f"top-level names, e.g. params=({self.params!r},).")
        if self.params is not None and not callable(self.params):
            object.__setattr__(self, "params", tuple(self.params))
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"Player {self.name!r}: schedule must be a jaxvae.training.Schedule; got "
                            f"{type(self.schedule).__name__}.")

    def selects(self, path: tuple[Any, ...]) -> bool:
        """Whether the parameter at ``path`` is this player's."""
        if self.params is None:
            return True
        if callable(self.params):
            return bool(self.params(path))
        return path[0] in self.params

    def split(self, params: Params) -> tuple[Params, Params]:
        """``(own, others)``: the parameters this player trains and the rest."""
        if self.params is None:
            return params, {}
        return partition_tree(params, self.selects)


@dataclasses.dataclass(frozen=True)
class StateUpdate:
    """An update of the model's non-gradient state that is not a side effect of a forward pass (a dead-code
    reset, a k-means initialization): ``update(variables, state, batch, key, step) -> state``, run after the
    players on its :class:`Schedule`; ``variables`` are the parameters after this step's updates joined with
    ``state``."""

    name: str
    update: Callable[[Params, Params, Any, Array, Array], Params]
    schedule: Schedule = Schedule()


@dataclasses.dataclass(frozen=True)
class Program:
    """What one training step does: the players in order, then the state updates (see the module docstring).

    ``Program.single(objective, optimizer)`` is the one-player program of every built-in preset.
    """

    players: tuple[Player, ...]
    state_updates: tuple[StateUpdate, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "players", tuple(self.players))
        object.__setattr__(self, "state_updates", tuple(self.state_updates))
        if not self.players:
            raise ValueError("A Program needs at least one Player.")
        for p in self.players:
            if not isinstance(p, Player):
                raise TypeError(f"Program.players holds a {type(p).__name__}; give jaxvae.training.Player-s.")
        names = [p.name for p in self.players] + [u.name for u in self.state_updates]
        if len(set(names)) != len(names):
            raise ValueError(f"The names of a program's players and state updates must differ; got {names}.")
        if not self.players[0].schedule.always:
            raise ValueError(f"The first player ({self.players[0].name!r}) reports the run's metrics and must run "
                             f"every step; it runs {self.players[0].schedule.describe()}. Put a player that runs "
                             "every step first.")

    @classmethod
    def single(cls, objective: Objective, optimizer: optax.GradientTransformation, name: str = "model") -> Program:
        """One player training every parameter at every step."""
        return cls((Player(name, objective, optimizer),))

    @property
    def several(self) -> bool:
        """Whether the optimizer and objective states are kept per player (``{name: state}``)."""
        return len(self.players) > 1

    def init(self, params: Params) -> tuple[Any, Any]:
        """``(opt_state, obj_state)`` for fresh ``params``."""
        opt = [p.optimizer.init(p.split(params)[0]) for p in self.players]
        obj = [p.objective.init(params) for p in self.players]
        if not self.several:
            return opt[0], obj[0]
        names = [p.name for p in self.players]
        return dict(zip(names, opt)), dict(zip(names, obj))

    def hyper(self, step: Array) -> Any:
        """The scheduled weights at ``step``: the player's (one player) or ``{name: weights}``; a sweep stacks
        them over its models."""
        if not self.several:
            return self.players[0].objective.hyper(step)
        return {p.name: p.objective.hyper(step) for p in self.players}

    def describe(self) -> str:
        """One line per player and state update."""
        lines = []
        for p in self.players:
            what = "all parameters" if p.params is None else (
                "parameters " + ", ".join(p.params) if isinstance(p.params, tuple) else "selected parameters")
            lines.append(f"player {p.name}: {what}, {p.schedule.describe()}")
        lines += [f"state update {u.name}: {u.schedule.describe()}" for u in self.state_updates]
        return "\n".join(lines)


# A user's training program: (cfg, model, objective, optimizer) -> Program (train.program).
ProgramBuilder = Callable[[Config, PureModel, Objective, optax.GradientTransformation], "Program"]


def build_program(cfg: Config, model: PureModel, objective: Objective, optimizer: optax.GradientTransformation,
                  program: ProgramBuilder | None = None) -> Program:
    """The training program (:mod:`jaxvae.training`): ``program`` (a function ``(cfg, model, objective,
    optimizer) -> Program``), else the one named by ``train.program``, else one player training every parameter
    with ``objective`` and ``optimizer`` (every built-in preset)."""
    if program is None and cfg.train.program:
        program = resolve_builder(cfg.train.program, "train.program",
                                  "(cfg, model, objective, optimizer) -> jaxvae.training.Program")
    if program is None:
        return Program.single(objective, optimizer)
    built = program(cfg, model, objective, optimizer)
    if not isinstance(built, Program):
        raise ConfigError(f"The training program function {builder_reference(program)} returned a "
                          f"{type(built).__name__}, not a jaxvae.training.Program.")
    return built


def init_program_state(model: PureModel, program: Program, key: Array) -> TrainState:
    """A fresh state: the model's variables from ``fold_in(key, 0)`` (split into parameters and non-gradient
    state), the per-step stream from ``fold_in(key, 1)``."""
    params, model_state = model.split_state(model.init(jax.random.fold_in(key, 0)))
    opt_state, obj_state = program.init(params)
    zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers, so the state can be donated
    return TrainState(zero(), params, opt_state, obj_state, jax.random.fold_in(key, 1), zero(), zero(),
                      model_state)


def make_program_step(program: Program, *, dynamic_binarization: bool = False,
                      skip_threshold: float | None = None
                      ) -> Callable[[TrainState, Any, Any], tuple[TrainState, Metrics]]:
    """The (unjitted) step of ``program``: ``(state, batch, hyper) -> (state, metrics)``, ``hyper`` from
    :meth:`Program.hyper` (stacked ``[N]`` when a sweep ``vmap``-s it).

    A player's update is skipped (its parameters, optimizer and objective state and the state its forward pass
    produced kept) when its loss or gradient is not finite or, with ``skip_threshold``, when the gradient's
    global norm exceeds it (VDVAE's update skipping, Child 2021); a step with any skipped update counts in
    ``nonfinite_total`` / ``nonfinite_consecutive``. The metric ``skipped`` (``<name>_skipped``) is 1 for a
    skipped update and, with a threshold, ``skipped_grad_norm`` 1 for one skipped for its norm alone.
    """
    players = program.players
    several = program.several
    # The training loss reaches the optimizer as `value` (optax.contrib.reduce_on_plateau reads it; every other
    # transformation ignores it).
    optimizers = tuple(optax.with_extra_args_support(p.optimizer) for p in players)

    def own(tree: Any, i: int) -> Any:
        return tree[players[i].name] if several else tree

    def play(i: int, step: Array, batch: Any, key: Array, hyper: Any,
             carry: tuple) -> tuple[tuple, Array, Metrics]:
        """Player ``i``'s update: ``carry = (params, opt_state_i, obj_state_i, model_state)``."""
        player, optimizer = players[i], optimizers[i]
        params, opt_state, obj_state, model_state = carry
        mine, others = player.split(params)

        def loss_fn(mine: Params) -> tuple[Array, Any]:
            variables = mine
            if others or model_state:
                variables = merge_trees(mine, jax.lax.stop_gradient(others), model_state)
            return player.objective.loss(variables, obj_state, batch, key, step, hyper)

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(mine)
        grad_norm = optax.tree.norm(grads)
        # A NaN or Inf anywhere in the gradients makes their norm non-finite: one reduction decides the skip.
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        too_large = None
        if skip_threshold is not None:
            too_large = ok & (grad_norm > skip_threshold)
            ok = ok & ~too_large

        def apply(c: tuple) -> tuple:
            mine, opt_state, obj_state, model_state = c
            updates, opt_state = optimizer.update(grads, opt_state, mine, value=loss)
            new_state = model_state if out.state is None else out.state
            return (optax.apply_updates(mine, updates), opt_state,
                    player.objective.update(obj_state, out, step, hyper), new_state)

        # lax.cond runs one branch only, so a skipped update costs nothing and a normal one no extra select.
        mine, opt_state, obj_state, model_state = jax.lax.cond(ok, apply, lambda c: c,
                                                               (mine, opt_state, obj_state, model_state))
        params = merge_trees(mine, others) if others else mine
        return (params, opt_state, obj_state, model_state), ok, step_metrics(hyper, loss, out, grad_norm, ok,
                                                                              too_large)

    def train_step(state: TrainState, batch: Any, hyper: Any) -> tuple[TrainState, Metrics]:
        step_key = jax.random.fold_in(state.key, state.step)
        if dynamic_binarization:
            bin_key = jax.random.fold_in(step_key, BINARIZE_SALT)
            batch = map_images(lambda k, x: jax.random.bernoulli(k, x).astype(x.dtype), batch, bin_key)
        params, model_state = state.params, state.model_state
        opt_states, obj_states = state.opt_state, state.obj_state
        all_ok, metrics = jnp.array(True), {}
        for i, player in enumerate(players):
            key = jax.random.fold_in(step_key, OBJECTIVE_SALT if i == 0 else _PLAYER_SALT + i)
            run = functools.partial(play, i, state.step, batch, key, own(hyper, i))
            carry = (params, own(opt_states, i), own(obj_states, i), model_state)
            if player.schedule.always:
                carry, ok, player_metrics = run(carry)
            else:  # an idle player changes nothing and reports zeros (per_active_step averages over its steps)
                active = player.schedule.active(state.step)
                carry, ok, player_metrics = jax.lax.cond(active, run, _idle(run, carry), carry)
                player_metrics = {**player_metrics, ACTIVE[1:]: active.astype(jnp.float32)}
            params, opt_i, obj_i, model_state = carry
            if several:
                opt_states, obj_states = {**opt_states, player.name: opt_i}, {**obj_states, player.name: obj_i}
            else:
                opt_states, obj_states = opt_i, obj_i
            all_ok = all_ok & ok
            prefix = "" if i == 0 else f"{player.name}_"
            metrics.update({prefix + k: v for k, v in player_metrics.items()})
        for j, update in enumerate(program.state_updates):
            key = jax.random.fold_in(step_key, _STATE_SALT + j)
            run = functools.partial(_run_update, update, params, batch, key, state.step)
            if update.schedule.always:
                model_state = run(model_state)
            else:
                model_state = jax.lax.cond(update.schedule.active(state.step), run, lambda ms: ms, model_state)
        new_state = state._replace(
            step=state.step + 1, params=params, opt_state=opt_states, obj_state=obj_states,
            model_state=model_state,
            nonfinite_total=state.nonfinite_total + (~all_ok).astype(jnp.int32),
            nonfinite_consecutive=jnp.where(all_ok, jnp.zeros_like(state.nonfinite_consecutive),
                                            state.nonfinite_consecutive + 1))
        return new_state, metrics

    return train_step


def _idle(run: Callable[[tuple], tuple], carry: tuple) -> Callable[[tuple], tuple]:
    """The branch of a player that does not run this step: the carry unchanged, ``ok``, zero metrics."""
    metric_shapes = jax.eval_shape(run, carry)[2]
    return lambda c: (c, jnp.array(True), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes))


def _run_update(update: StateUpdate, params: Params, batch: Any, key: Array, step: Array,
                model_state: Params) -> Params:
    return update.update(merge_trees(params, model_state), model_state, batch, key, step)


def step_metrics(hyper: Mapping[str, Array], loss: Array, out: Any, grad_norm: Array, finite: Array,
                 too_large: Array | None = None) -> Metrics:
    """The metrics of one player's update: its scheduled weights, the loss and the batch means of its
    objective's terms (those it has), the gradient norm, ``skipped`` (1 for a skipped update) and, with a skip
    threshold (``too_large`` given), ``skipped_grad_norm``."""
    metrics = {
        **{k: jnp.asarray(v, jnp.float32) for k, v in hyper.items()},
        "loss": loss,
        **{name: jnp.mean(value) for name, value in (("elbo", out.elbo), ("recon", out.recon), ("kl", out.kl))
           if value is not None},
        "grad_norm": grad_norm,
        "skipped": (~finite).astype(jnp.int32).astype(jnp.float32),
        **out.metrics,
    }
    if too_large is not None:
        metrics["skipped_grad_norm"] = too_large.astype(jnp.float32)
    if out.kl_per_dim is not None:
        metrics["kl_per_dim"] = jnp.mean(out.kl_per_dim, axis=0)
    return metrics


def per_active_step(record: dict[str, Any]) -> dict[str, Any]:
    """A logging window's metric means (over all its steps) with each scheduled player's metrics turned into
    means over the steps that player ran (``<name>_active`` is the share of steps it ran; where it ran in none,
    its metrics stay 0)."""
    out = dict(record)
    for key in [k for k in record if k.endswith(ACTIVE)]:
        prefix, share = key[:-len(ACTIVE)] + "_", np.asarray(record[key], np.float64)
        for k in record:
            if k.startswith(prefix) and k != key:
                value = np.asarray(record[k])
                out[k] = np.where(share > 0, value / np.where(share > 0, share, 1.0), value)
    return out
