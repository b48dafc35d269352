"""Train steps: non-finite updates are skipped and counted; the scan and host loops agree; no recompilation;
dynamic binarization is re-sampled per step and reproducible."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import config
from jaxvae.models.factory import build_model
from jaxvae.objectives.factory import build_objective
from jaxvae.training.optimizers import build_optimizer
from jaxvae.training.step import TrainState, init_train_state, make_train_chunk, make_train_step


def _setup(overrides=(), event_shape=(8, 8, 1), total=100):
    cfg = config.apply_overrides(config.get_preset("digits"),
                                 ["model.hidden=32", "model.latent_dim=4", *overrides])
    model = build_model(cfg, event_shape)
    opt = build_optimizer(cfg, total)
    obj = build_objective(cfg, model, total)
    state = init_train_state(model, opt, obj, jax.random.key(0))
    return model, opt, obj, state


def _data(n=64, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 8, 8, 1)).astype(np.float32)


def test_nonfinite_updates_are_skipped_counted_and_reset():
    model, opt, obj, state = _setup()
    step = jax.jit(make_train_step(model, obj, opt))
    x = _data(16)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    state1, m1 = step(state, bad)
    assert float(m1["skipped"]) == 1.0
    assert int(state1.nonfinite_total) == 1 and int(state1.nonfinite_consecutive) == 1
    for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)
    state2, _ = step(state1, bad)
    assert int(state2.nonfinite_consecutive) == 2
    state3, m3 = step(state2, x)
    assert float(m3["skipped"]) == 0.0
    assert int(state3.nonfinite_total) == 2 and int(state3.nonfinite_consecutive) == 0
    assert int(state3.step) == 3
    pairs = zip(jax.tree.leaves(state3.params), jax.tree.leaves(state.params))
    changed = [not np.array_equal(a, b) for a, b in pairs]
    assert any(changed)


def test_scan_chunk_equals_host_loop_of_jitted_steps():
    model, opt, obj, state = _setup()
    data = _data(64)
    perm = np.random.default_rng(1).permutation(64).astype(np.int32)
    train_step = make_train_step(model, obj, opt)
    chunk = jax.jit(make_train_chunk(train_step, 16, 4))
    s_scan, m_scan = chunk(state, jnp.asarray(data), jnp.asarray(perm), jnp.int32(0))
    step = jax.jit(train_step)
    s_host, losses = state, []
    for b in range(4):
        s_host, m = step(s_host, data[perm[b * 16:(b + 1) * 16]])
        losses.append(float(m["loss"]))
    np.testing.assert_allclose(float(m_scan["loss"]), np.mean(losses), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s_scan.params), jax.tree.leaves(s_host.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_train_step_compiles_once():
    model, opt, obj, state = _setup()
    traces = []
    inner = make_train_step(model, obj, opt)

    def counted(state, batch):
        traces.append(1)
        return inner(state, batch)

    step = jax.jit(counted, donate_argnums=0)
    for i in range(5):
        state, _ = step(state, _data(16, seed=i))
    assert len(traces) == 1 and int(state.step) == 5


@pytest.mark.slow  # moved to the slow tier to keep `make test` well under 10 minutes on 2 cores
def test_dynamic_binarization_is_resampled_each_step_and_reproducible():
    model, opt, obj, state = _setup(["objective.num_samples=1"])
    seen = []

    def loss(params, obj_state, x, key, step, hyper):
        seen.append(x)
        return obj.loss(params, obj_state, x, key, step, hyper)

    spy = obj._replace(loss=loss)
    step = make_train_step(model, spy, opt, dynamic_binarization=True)
    grey = np.full((16, 8, 8, 1), 0.5, np.float32)
    s1, _ = step(state, grey)
    step(s1, grey)
    step(state, grey)
    a, b, c = (np.asarray(v) for v in seen)
    assert set(np.unique(a)) <= {0.0, 1.0} and 0.4 < a.mean() < 0.6
    assert not np.array_equal(a, b)  # a new binarization at the next step
    np.testing.assert_array_equal(a, c)  # the same step from the same state: the same binarization


def test_chunk_boundaries_are_the_multiples_of_each_interval_and_the_epoch_ends():
    """Records, checkpoints and validation fall on multiples of the global step (they fell at 20, 37, 57 ... when
    the log interval was counted from each epoch start), and every epoch end is a boundary."""
    from jaxvae.training.chunks import chunk_end

    spe, log_every, ckpt_every, total = 78, 50, 120, 1000
    ends, step = [], 0
    while step < total:
        step = chunk_end(step, spe, log_every, total, every=(ckpt_every, 0))
        ends.append(step)
    expected = sorted({*range(log_every, total, log_every), *range(ckpt_every, total, ckpt_every),
                       *range(spe, total, spe), total})
    assert ends == expected
    # Resuming from any boundary continues on the same grid.
    resumed, step = [], 240
    while step < total:
        step = chunk_end(step, spe, log_every, total, every=(ckpt_every, 0))
        resumed.append(step)
    assert resumed == [e for e in expected if e > 240]


def test_update_skipping_skips_exactly_the_steps_above_the_threshold():
    model, opt, obj, state = _setup()
    free = jax.jit(make_train_step(model, obj, opt))
    batches = [_data(16, seed=s) for s in range(12)]
    norms = [float(free(state, x)[1]["grad_norm"]) for x in batches]  # the first step's norm of each batch
    threshold = float(np.median(norms))
    step = jax.jit(make_train_step(model, obj, opt, skip_threshold=threshold))
    for x, norm in zip(batches, norms):
        new, m = step(state, x)  # from the same state: the gradient norm is the one measured above
        above = norm > threshold
        np.testing.assert_allclose(float(m["grad_norm"]), norm, rtol=1e-6)
        assert float(m["skipped_grad_norm"]) == float(m["skipped"]) == float(above)
        assert int(new.nonfinite_consecutive) == int(above) and int(new.step) == 1
        unchanged = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params),
                                                              jax.tree.leaves(state.params)))
        assert unchanged == above
    assert 0 < sum(n > threshold for n in norms) < len(norms)
    # Without a threshold the program is the unchanged step (no extra metric).
    assert "skipped_grad_norm" not in free(state, batches[0])[1]


def test_too_many_skipped_updates_in_a_row_stop_the_run_with_the_threshold_named(tmp_path):
    import pytest

    from jaxvae import runs
    from jaxvae.errors import TrainingDivergedError

    cfg = config.apply_overrides(config.get_preset("digits"), [
        "model.hidden=16", "model.latent_dim=2", "train.steps=40", "train.log_every=10", "monitor.every=0",
        "optimizer.skip_threshold=1e-6", "optimizer.max_consecutive_nonfinite=5"])
    with pytest.raises(TrainingDivergedError, match=r"gradient norm above optimizer\.skip_threshold=1e-06"):
        runs.fit(cfg, tmp_path, progress=False, log=lambda _: None)


def test_the_parameter_ema_follows_its_recurrence_and_is_what_gets_evaluated():
    from jaxvae.training.step import evaluation_params

    model, opt, obj, state = _setup(["optimizer.ema_decay=0.9"])
    step = jax.jit(make_train_step(model, obj, opt))
    expected = state.params
    np.testing.assert_array_equal(jax.tree.leaves(evaluation_params(state))[0], jax.tree.leaves(state.params)[0])
    for s in range(5):
        state, _ = step(state, _data(16, seed=s))
        expected = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, expected, state.params)
    for a, b in zip(jax.tree.leaves(evaluation_params(state)), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(evaluation_params(state)),
                                                     jax.tree.leaves(state.params)))
    _, _, _, plain = _setup()
    assert evaluation_params(plain) is plain.params  # without the EMA: the parameters themselves


def test_the_training_loss_reaches_reduce_on_plateau_which_scales_the_updates_after_patience_epochs():
    """A loss that never improves: after `patience` epochs (values accumulated over an epoch of steps) the update
    scale drops by `factor`; the real train step passes the loss as optax's `value`."""
    from jaxvae.objectives import Objective, ObjectiveOutput

    spe, patience = 5, 2
    cfg = config.apply_overrides(config.get_preset("digits"), [
        "optimizer.name=adam", f"optimizer.plateau.patience={patience}", "optimizer.plateau.factor=0.5",
        "optimizer.learning_rate=0.1"])
    opt = build_optimizer(cfg, 1000, steps_per_epoch=spe)
    zero = jnp.zeros(())

    def loss(params, state, x, key, step, hyper):  # constant value 3, gradient 0.1 * w (never improves)
        w = params["w"]
        value = 3.0 + 0.1 * (jnp.sum(w) - jax.lax.stop_gradient(jnp.sum(w)))
        return value, ObjectiveOutput(-value[None], value[None], zero[None], None, {})

    obj = Objective(init=lambda p: {}, hyper=lambda s: {}, loss=loss, update=lambda s, o, t, h: s)
    params = {"w": jnp.ones(3)}
    state = TrainState(jnp.int32(0), params, opt.init(params), {}, jax.random.key(0), jnp.int32(0), jnp.int32(0))
    step = jax.jit(make_train_step(None, obj, opt))
    moves = []
    for _ in range(spe * (patience + 3)):
        before = state.params["w"]
        state, _ = step(state, jnp.zeros((2, 8, 8, 1)))
        moves.append(float(jnp.abs(before - state.params["w"])[0]))
    first = moves[0]  # Adam's first step has size lr
    # Epoch 1 sets the best, epochs 2 and 3 do not improve: the step that completes epoch 3 already moves with
    # scale 0.5 (optax applies a reduction to the update that triggers it), and epochs 4-5 halve it again.
    end3 = spe * (patience + 1) - 1
    np.testing.assert_allclose(moves[:end3], first, rtol=1e-3)
    np.testing.assert_allclose(moves[end3:end3 + spe * patience], 0.5 * first, rtol=1e-3)
    np.testing.assert_allclose(moves[end3 + spe * patience], 0.25 * first, rtol=1e-3)


@pytest.mark.parametrize("kind", ["scan", "host"])
def test_records_do_not_depend_on_how_the_steps_were_split(kind):
    """The chunk loop carries the metric sums across calls, so one-step pieces (a tiny max_chunk_seconds) give
    bitwise the records and the state of whole chunks; a weighted mean of piece means did not (a resumed run,
    whose first piece is one step, wrote other records than the uninterrupted run)."""
    from jaxvae.training.chunks import ChunkLoop, make_host_chunk, make_scan_chunk
    from jaxvae.training.step import jit_train_chunk, jit_train_step

    model, opt, obj, state0 = _setup()
    data = _data(64)
    train_step = make_train_step(model, obj, opt)

    def run(max_chunk_seconds):
        if kind == "scan":
            run_chunk = make_scan_chunk(jit_train_chunk(make_train_chunk(train_step, 16, carry_sums=True)),
                                        jnp.asarray(data))
        else:
            run_chunk = make_host_chunk(jit_train_step(train_step), data, 16, slice(None), jnp.asarray)
        loop = ChunkLoop(run_chunk, total_steps=11, steps_per_epoch=4, batch_size=16, log_every=5,
                         data_seed=0, num_examples=64, permutation_on_device=kind == "scan",
                         max_chunk_seconds=max_chunk_seconds)
        state = jax.tree.map(jnp.copy, state0)  # the chunks donate the state
        loop.compile(state, 0)
        results = list(loop.run(state, 0))
        records = [(r.chunk.end, {k: np.asarray(v) for k, v in r.record.items() if k != "examples_per_sec"})
                   for r in results if r.record is not None]
        return records, [r.chunk.length for r in results], results[-1].state

    whole, whole_lengths, whole_state = run(0.0)
    pieces, piece_lengths, piece_state = run(1e-9)
    assert whole_lengths == [4, 1, 3, 2, 1] and piece_lengths == [1] * 11  # epochs of 4, records at 5, 10, 11
    assert [end for end, _ in whole] == [end for end, _ in pieces] == [5, 10, 11]
    for (_, a), (_, b) in zip(whole, pieces):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for a, b in zip(jax.tree.leaves(whole_state.params), jax.tree.leaves(piece_state.params)):
        np.testing.assert_array_equal(a, b)
