r"""Aggressive inference-network training (He, Spokoyny, Neubig & Berg-Kirkpatrick 2019, "Lagging Inference
Networks and Posterior Collapse in Variational Autoencoders", ICLR), ``train.aggressive.enabled=true``.

Early in training the inference network (encoder) lags behind the true posterior, the decoder learns to ignore
``z``, and the posterior collapses. He et al. let the encoder catch up before each decoder update:

* The encoder and the decoder have separate optimizers (here: two instances of the run's optax optimizer, one
  over the parameters under the top-level key ``train.aggressive.encoder_key``, one over all the others:
  decoder, prior, likelihood scales; :func:`split_optimizer`).
* While the *aggressive phase* is on, each training step runs an **inner loop** of encoder-only updates, each on
  a fresh random batch of the training set, minimizing the run's loss (its objective, with the step's scheduled
  weights); at most ``max_inner`` updates. After every ``check_every`` inner updates the mean loss of those
  updates is compared with that of the previous window of ``check_every`` (the first window with
  :math:`+\infty`), and the loop stops when it rose: ``previous - current < 0`` (the rule of the reference code,
  jxhe/vae-lagging-encoder; equal means do not stop it). Then **one decoder-only update** on the step's own batch
  (the encoder is not updated by it).
* The phase ends when the validation mutual information :math:`I_q(x; z)` (computed at the end of every epoch,
  the mean over batches of ``eval.batch_size`` of the minibatch estimate :func:`jaxvae.evaluation.diagnostics.
  mutual_information`, as in the reference code) has not improved on its best value (by more than
  ``min_delta`` nats) for ``patience`` epochs in a row. Training then continues with joint updates of all
  parameters (both optimizers, one step each).

What is counted, per training step, in ``metrics.jsonl`` (means over each record's steps): ``aggressive`` (1 while
the phase is on, 0 after), ``aggressive_inner_steps`` (the inner encoder updates applied in that step, 0 after
the phase); ``loss``, ``elbo``, ``grad_norm``, ... are those of the outer update (in the phase the decoder-only
update, whose gradient norm is over the decoder's parameters). At every epoch end of the phase a record
``{"split": "aggressive", "valid_mi", "best_valid_mi", "epochs_without_improvement", "aggressive"}``.

Determinism and resume: the inner loop is one ``jax.lax.while_loop`` inside the compiled step (no recompilation,
no host round trip); inner update ``i`` of step ``t`` draws its batch indices, binarization and objective samples
from ``fold_in(fold_in(fold_in(key, t), 2), i)``, so a resumed run draws the same batches. The phase flag is part
of the optimizer state (:class:`AggressiveOptState`, checkpointed) and the tracker's state (best MI, epochs
without improvement) is a pure function of the ``aggressive`` records in ``metrics.jsonl``, which a resumed run
truncates at its checkpoint and replays (:meth:`AggressivePhase.replay`), like early stopping: an interrupted run
resumes to bitwise the parameters of an uninterrupted one.

Scope: the inner loop gathers batches from the training set on the device, so aggressive training runs with the
scanned loop (``train.loop=auto`` chooses it; ``host`` and multi-process runs are refused), not in sweeps, and
not with optimizer settings that count updates (learning-rate schedules other than ``constant``,
``optimizer.plateau``, ``optimizer.ema_decay``, the spectral regularization's warm-up): the encoder's optimizer
makes up to ``max_inner`` updates per step. ``optimizer.grad_clip_norm`` clips each optimizer's gradient (the
encoder's and the decoder's separately, also after the phase). An inner update with a non-finite loss or
gradient (or one above ``optimizer.skip_threshold``) is not applied, is counted in ``nonfinite_total``, and ends
the inner loop.

Differences from the reference code, by choice: every inner update draws a fresh batch (the paper's Algorithm 1;
the code's first inner update reuses the step's batch), rows are drawn uniformly with replacement, the inner loop
runs up to ``max_inner`` updates (the code's ``while sub_iter < 100`` from 1 runs 99), the first window is
compared with :math:`+\infty` (the code: :math:`10^4`, a per-word loss), and the patience counts epochs without
improvement in a row (the code counts them over the whole phase, and an equal MI counts as an improvement there).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvae.data.batches import num_examples, take
from jaxvae.errors import ConfigError
from jaxvae.evaluation import diagnostics
from jaxvae.models.protocol import Params, PureModel
from jaxvae.objectives.losses import Objective
from jaxvae.training.program import BINARIZE_SALT, OBJECTIVE_SALT
from jaxvae.training.step import Metrics, TrainState, apply_or_skip, step_metrics

__all__ = ["AggressiveOptState", "AggressivePhase", "SplitOptimizer", "make_aggressive_train_step",
           "make_mi_evaluator", "split_optimizer"]

Array = jax.Array

_INNER_SALT = 2  # the inner loop's stream: fold_in(fold_in(step_key, _INNER_SALT), i)
RECORD_SPLIT = "aggressive"  # the "split" of the phase's records in metrics.jsonl
MI_KEY_OFFSET = 4  # the validation MI uses jax.random.key(train.seed + 4) (1: validation, 2: test, 3: monitor)


class AggressiveOptState(NamedTuple):
    """The optimizer state of an aggressive run (the ``opt_state`` of its
    :class:`~jaxvae.training.step.TrainState`).

    Attributes:
      encoder: the encoder's optimizer state.
      decoder: the state of the optimizer of every other parameter.
      active: int32 ``[]``, 1 while the aggressive phase is on.
    """

    encoder: optax.OptState
    decoder: optax.OptState
    active: Array


def split_params(params: Params, encoder_key: str) -> tuple[Params, Params]:
    """``(encoder's parameters, the rest)``: ``params[encoder_key]`` and a dict of the other top-level keys."""
    if not isinstance(params, Mapping) or encoder_key not in params:
        keys = ", ".join(map(str, params)) if isinstance(params, Mapping) else type(params).__name__
        raise ConfigError(f"train.aggressive needs the encoder's parameters under one top-level key, "
                          f"train.aggressive.encoder_key={encoder_key!r}, and this model's parameters have none "
                          f"(top-level keys: {keys}). Set train.aggressive.encoder_key to the encoder's key (e.g. "
                          "inference for model.inference=bottom_up hierarchies).")
    rest = {k: v for k, v in params.items() if k != encoder_key}
    if not rest:
        raise ConfigError(f"train.aggressive.encoder_key={encoder_key!r} holds all of the model's parameters, so "
                          "there is no decoder to update separately; name the encoder's own key.")
    return params[encoder_key], rest


def merge_params(encoder: Params, rest: Params, encoder_key: str) -> Params:
    """The inverse of :func:`split_params`."""
    return {**rest, encoder_key: encoder}


class SplitOptimizer(NamedTuple):
    """Two instances of one optax optimizer: ``init``/``update`` work on the whole parameter tree (the joint
    update after the phase), ``part`` is the optimizer that each of the two parameter groups runs."""

    init: Callable[[Params], AggressiveOptState]
    update: Callable[..., tuple[Params, AggressiveOptState]]
    part: optax.GradientTransformationExtraArgs
    encoder_key: str


def split_optimizer(optimizer: optax.GradientTransformation, encoder_key: str = "encoder") -> SplitOptimizer:
    """``optimizer`` run separately on the encoder's parameters and on the rest (see the module docstring).

    ``init(params)`` gives an :class:`AggressiveOptState` with the phase on; ``update(grads, state, params,
    **extra)`` updates both groups (each with its own state) and leaves ``active`` as it is."""
    part = optax.with_extra_args_support(optimizer)

    def init(params: Params) -> AggressiveOptState:
        enc, rest = split_params(params, encoder_key)
        return AggressiveOptState(part.init(enc), part.init(rest), jnp.ones((), jnp.int32))

    def update(grads, state: AggressiveOptState, params=None, **extra):
        g_enc, g_rest = split_params(grads, encoder_key)
        p_enc, p_rest = split_params(params, encoder_key)
        u_enc, s_enc = part.update(g_enc, state.encoder, p_enc, **extra)
        u_rest, s_rest = part.update(g_rest, state.decoder, p_rest, **extra)
        return merge_params(u_enc, u_rest, encoder_key), state._replace(encoder=s_enc, decoder=s_rest)

    return SplitOptimizer(init, update, part, encoder_key)


class _Inner(NamedTuple):
    """The inner loop's carry."""

    count: Array  # int32, inner updates applied
    encoder: Params
    opt_state: optax.OptState
    window: Array  # float32, the sum of the current window's losses
    previous: Array  # float32, the previous window's mean loss (+inf before the first)
    done: Array  # bool
    bad: Array  # int32, inner updates not applied (0 or 1: the first ends the loop)


def make_aggressive_train_step(objective: Objective, optimizer: SplitOptimizer, *, batch_size: int,
                               max_inner: int = 100, check_every: int = 10, dynamic_binarization: bool = False,
                               skip_threshold: float | None = None,
                               batch_sharding: jax.sharding.Sharding | None = None
                               ) -> Callable[[TrainState, Array, Array], tuple[TrainState, Metrics]]:
    """The aggressive train step ``(state, batch [B, *E], data [N, *E]) -> (state, metrics)`` (unjitted; scan
    it with :func:`jaxvae.training.step.make_train_chunk` and ``pass_data=True``).

    ``state.opt_state`` is an :class:`AggressiveOptState` (from ``optimizer.init``). While its ``active`` flag is
    1 the step runs the inner loop of encoder-only updates on batches of ``batch_size`` rows of ``data`` and then
    a decoder-only update on ``batch``; once it is 0, a joint update (see the module docstring). ``max_inner >=
    check_every >= 1``. Updates are skipped on non-finite values (and above ``skip_threshold``) as in
    :func:`jaxvae.training.step.make_train_step_with_hyper`.
    """
    if not 1 <= check_every <= max_inner:
        raise ValueError(f"need max_inner >= check_every >= 1; got max_inner={max_inner}, "
                         f"check_every={check_every}.")
    part, key_name = optimizer.part, optimizer.encoder_key
    split = lambda tree: split_params(tree, key_name)
    merge = lambda enc, rest: merge_params(enc, rest, key_name)

    def accept(loss: Array, grad_norm: Array) -> tuple[Array, Array]:
        """``(apply the update, it was refused for its norm alone)``."""
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if skip_threshold is None:
            return finite, jnp.zeros((), bool)
        too_large = finite & (grad_norm > skip_threshold)
        return finite & ~too_large, too_large

    def train_step(state: TrainState, batch: Array, data: Array) -> tuple[TrainState, Metrics]:
        hyper = objective.hyper(state.step)
        step_key = jax.random.fold_in(state.key, state.step)
        if dynamic_binarization:
            batch = jax.random.bernoulli(jax.random.fold_in(step_key, BINARIZE_SALT), batch).astype(batch.dtype)
        key = jax.random.fold_in(step_key, OBJECTIVE_SALT)
        inner_key = jax.random.fold_in(step_key, _INNER_SALT)

        def loss_fn(params, x, k):
            return objective.loss(params, state.obj_state, x, k, state.step, hyper)

        def inner_loop(enc: Params, rest: Params, opt_state: optax.OptState) -> _Inner:
            def cond(c: _Inner) -> Array:
                return (c.count < max_inner) & ~c.done

            def body(c: _Inner) -> _Inner:
                k = jax.random.fold_in(inner_key, c.count)  # the loop ends at the first refused update
                idx = jax.random.randint(jax.random.fold_in(k, 0), (batch_size,), 0, num_examples(data))
                x = jnp.take(data, idx, axis=0)
                if batch_sharding is not None:
                    x = jax.lax.with_sharding_constraint(x, batch_sharding)
                if dynamic_binarization:
                    x = jax.random.bernoulli(jax.random.fold_in(k, 1), x).astype(x.dtype)
                inner_loss = lambda e: loss_fn(merge(e, rest), x, jax.random.fold_in(k, 2))
                (loss, _), grads = jax.value_and_grad(inner_loss, has_aux=True)(c.encoder)
                ok, _ = accept(loss, optax.tree.norm(grads))

                def apply(c: _Inner) -> tuple[Params, optax.OptState]:
                    updates, s = part.update(grads, c.opt_state, c.encoder, value=loss)
                    return optax.apply_updates(c.encoder, updates), s

                enc, s = jax.lax.cond(ok, apply, lambda c: (c.encoder, c.opt_state), c)
                count = c.count + ok.astype(jnp.int32)
                window = c.window + jnp.where(ok, loss, 0.0)
                check = ok & (count % check_every == 0)
                current = window / check_every
                stop = check & (c.previous - current < 0)  # the window's mean loss rose
                return _Inner(count, enc, s, jnp.where(check, 0.0, window),
                              jnp.where(check, current, c.previous), stop | ~ok,
                              c.bad + (~ok).astype(jnp.int32))

            zero = jnp.zeros((), jnp.int32)
            start = _Inner(zero, enc, opt_state, jnp.zeros((), jnp.float32), jnp.full((), jnp.inf, jnp.float32),
                           jnp.zeros((), bool), zero)
            return jax.lax.while_loop(cond, body, start)

        def aggressive(state: TrainState):
            enc, rest = split(state.params)
            inner = inner_loop(enc, rest, state.opt_state.encoder)
            (loss, out), grads = jax.value_and_grad(lambda r: loss_fn(merge(inner.encoder, r), batch, key),
                                                    has_aux=True)(rest)
            grad_norm = optax.tree.norm(grads)
            ok, too_large = accept(loss, grad_norm)

            def apply(_):
                updates, s = part.update(grads, state.opt_state.decoder, rest, value=loss)
                return (optax.apply_updates(rest, updates), s,
                        objective.update(state.obj_state, out, state.step, hyper))

            rest, dec_state, obj_state = jax.lax.cond(
                ok, apply, lambda _: (rest, state.opt_state.decoder, state.obj_state), None)
            new = state._replace(
                params=merge(inner.encoder, rest), obj_state=obj_state,
                opt_state=state.opt_state._replace(encoder=inner.opt_state, decoder=dec_state),
                nonfinite_total=state.nonfinite_total + inner.bad + (~ok).astype(jnp.int32),
                nonfinite_consecutive=jnp.where(ok, 0, state.nonfinite_consecutive + 1).astype(jnp.int32))
            return new, (loss, out, grad_norm, ok, too_large, inner.count)

        def joint(state: TrainState):
            (loss, out), grads = jax.value_and_grad(lambda p: loss_fn(p, batch, key), has_aux=True)(state.params)
            grad_norm = optax.tree.norm(grads)
            ok, too_large = accept(loss, grad_norm)
            new = apply_or_skip(state, ok, grads, loss, out, optimizer, objective, hyper)
            return new, (loss, out, grad_norm, ok, too_large, jnp.zeros((), jnp.int32))

        active = state.opt_state.active > 0
        new_state, (loss, out, grad_norm, ok, too_large, inner_steps) = jax.lax.cond(
            active, aggressive, joint, state)
        new_state = new_state._replace(step=state.step + 1)
        metrics = step_metrics(hyper, loss, out, grad_norm, ok, too_large if skip_threshold is not None else None)
        metrics["aggressive"] = active.astype(jnp.float32)
        metrics["aggressive_inner_steps"] = inner_steps.astype(jnp.float32)
        return new_state, metrics

    return train_step


def set_phase(state: TrainState, active: bool, sharding: jax.sharding.Sharding | None = None) -> TrainState:
    """``state`` with the aggressive phase flag set (placed with ``sharding``, the flag's in the state's
    shardings, when given); ``state`` itself when the flag already has that value."""
    if bool(int(state.opt_state.active)) == active:
        return state
    flag = jnp.asarray(int(active), jnp.int32)
    flag = jax.device_put(flag, sharding) if sharding is not None else flag
    return state._replace(opt_state=state.opt_state._replace(active=flag))


# ---------------------------------------------------------------------------------------------- the phase


def make_mi_evaluator(model: PureModel, *, batch_size: int = 100) -> Callable[[Params, np.ndarray, Array], float]:
    """``(params, data [N, *E], key) -> I_q(x; z)`` (nats): the mean over batches of ``batch_size`` of the
    minibatch estimate :func:`jaxvae.evaluation.diagnostics.mutual_information`, weighted by the batches' sizes (He
    et al.'s ``calc_mi``; the last batch may be smaller). Batch ``j`` uses ``fold_in(key, j)``."""
    model = model.evaluation()

    @jax.jit
    def batch_mi(params, x, key):
        q = model.encode(params, x, jax.random.fold_in(key, 0))
        return diagnostics.mutual_information(q, jax.random.fold_in(key, 1))

    def evaluate(params: Params, data: np.ndarray, key: Array) -> float:
        n = num_examples(data)
        if n == 0:
            raise ValueError("The mutual information needs at least one example.")
        total = 0.0
        for j, i in enumerate(range(0, n, batch_size)):
            x = take(data, slice(i, i + batch_size))
            total += float(batch_mi(params, x, jax.random.fold_in(key, j))) * num_examples(x)
        return total / n

    return evaluate


@dataclasses.dataclass
class AggressivePhase:
    """The host-side tracker that ends the aggressive phase (no traced code).

    Attributes:
      patience: epochs without a new best validation MI that end the phase.
      min_delta: the smallest increase of the validation MI (nats) that counts as an improvement.
      best: the best validation MI so far (``-inf`` before the first).
      without_improvement: epochs since that best (in a row).
      ended_at: the step at which the phase ended (``None`` while it is on).
    """

    patience: int
    min_delta: float = 0.0
    best: float = -math.inf
    without_improvement: int = 0
    ended_at: int | None = None

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}.")

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def update(self, step: int, mi: float) -> bool:
        """Records the validation MI at the end of an epoch (``step``); ``True`` when the phase ends here."""
        if not self.active:
            return False
        if mi > self.best + self.min_delta:  # NaN never improves
            self.best, self.without_improvement = float(mi), 0
        else:
            self.without_improvement += 1
        if self.without_improvement >= self.patience:
            self.ended_at = int(step)
            return True
        return False

    def record(self, step: int, mi: float) -> dict[str, Any]:
        """The ``metrics.jsonl`` record of the validation MI at ``step`` (after :meth:`update`)."""
        return {"step": int(step), "split": RECORD_SPLIT, "valid_mi": float(mi), "best_valid_mi": self.best,
                "epochs_without_improvement": self.without_improvement, "aggressive": float(self.active)}

    def replay(self, records: Iterable[Mapping[str, Any]], up_to: int) -> AggressivePhase:
        """Feeds the phase's records (``split == "aggressive"``) of steps ``<= up_to`` in order; returns
        ``self``."""
        for r in records:
            if r.get("split") == RECORD_SPLIT and int(r["step"]) <= up_to:
                self.update(int(r["step"]), float(r["valid_mi"]))
        return self

    def summary(self) -> dict[str, Any]:
        """The ``aggressive`` entry of ``summary.json``."""
        return {"patience_epochs": self.patience, "min_delta": self.min_delta,
                "best_valid_mi": None if self.best == -math.inf else self.best, "ended_at_step": self.ended_at}


def for_run(cfg: Any, workdir: Any, up_to: int) -> AggressivePhase | None:
    """The tracker of a run with ``train.aggressive.enabled`` (``None`` otherwise), replayed from its
    ``metrics.jsonl`` up to step ``up_to``."""
    a = cfg.train.aggressive
    if not a.enabled:
        return None
    from jaxvae.rundir.writers import read_metrics

    return AggressivePhase(a.patience, a.min_delta).replay(read_metrics(workdir), up_to)


def end_message(step: int, steps_per_epoch: int, phase: AggressivePhase) -> str:
    """The log line of the end of the phase."""
    return (f"aggressive inference training ends at step {step} (epoch {step / steps_per_epoch:g}): validation MI "
            f"has not improved on {phase.best:.4f} for {phase.patience} epochs.")
