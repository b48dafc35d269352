"""Sharded and multi-host training on simulated CPU devices.

JAX fixes its device count when it starts, so the checks run in subprocesses of this file (``python
tests/test_sharding.py WORKER ...``) with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``:

* ``mesh8`` (8 devices): 20 steps on a 1-device and on an 8-device mesh (data parallel and FSDP) from the same seed
  and global batch give the same losses and parameters; shardings of parameters, optimizer state and batch follow
  the rules table; one compilation for all steps; sharded IWAE equals unsharded; a sharded sweep equals an
  unsharded one; ``fit`` with ``mesh.shape=8`` equals ``mesh.shape=1``; a Ladder VAE trains alike on both (the
  top-down conv hierarchy too, in its own worker ``hierarchy``, in the extended tier).
* ``process`` (2 processes x 2 devices, ``jax.distributed.initialize`` on 127.0.0.1 with CPU collectives): each
  process loads only its rows of every batch; the run equals the single-process reference of ``mesh8``.

The in-process tests below need no extra devices (mesh parsing, errors, distributed start-up decisions).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TOL = 1e-5
FAST = ["model.hidden=64", "model.latent_dim=4", "train.batch_size=64", "train.steps=20", "train.log_every=5",
        "train.checkpoint_every=0", "eval.num_samples=10", "eval.max_examples=48", "eval.batch_size=16",
        "eval.num_images=16", "monitor.every=0"]

STABILIZERS = ["objective.beta_schedule=linear", "objective.warmup_steps=10", "objective.kl_balance=true",
               "optimizer.name=adamax", "optimizer.skip_threshold=1000", "optimizer.ema_decay=0.9",
               "optimizer.spectral_reg.weight=0.01", "model.log_scale_clamp=5"]
HIERARCHIES = {
    "ladder": ["model.network=hierarchical", "model.inference=ladder", "model.latent_dims=4,2",
               "model.layer_hidden=32,16", *STABILIZERS],
    "topdown": ["model.network=hierarchical", "model.inference=top_down", "model.latent_dims=2,1",
                "model.residual_channels=8", "model.activation=silu", *STABILIZERS],
}
EXTENDED_HIERARCHIES = ("topdown",)  # trained by their own worker in the extended tier (`make test-extended`)

# ------------------------------------------------------------------------------------------------ workers

def _params_flat(params) -> dict[str, np.ndarray]:
    import jax

    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def _losses(workdir: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
            if "split" not in r]


def _fit_and_dump(overrides: list[str], workdir: Path, out: Path) -> None:
    """``runs.fit``'s steps; the final parameters (gathered to the host) and losses go to ``out`` (process 0)."""
    from jaxvae import config, runs, sharding
    from jaxvae.training import loop

    cfg = config.apply_overrides(config.get_preset("digits"), [*FAST, *overrides])
    quiet = lambda _: None
    ctx = runs.setup_run(cfg, workdir, log=quiet)
    state = loop.train_loop(ctx, progress=False, log=quiet)
    summary = runs.final_report(ctx, state, log=quiet)
    params = sharding.to_host(state.params)
    if sharding.is_main_process():
        np.savez(out, **_params_flat(params))
        out.with_suffix(".json").write_text(json.dumps({"losses": _losses(workdir), "summary": summary}))


def worker_mesh8(outdir: Path) -> None:
    import jax
    import jax.numpy as jnp

    from jaxvae import config, sharding
    from jaxvae.evaluation import likelihood as evaluate
    from jaxvae.models.factory import build_model
    from jaxvae.objectives.factory import build_objective
    from jaxvae.runs import sweep
    from jaxvae.training.optimizers import build_optimizer
    from jaxvae.training.step import init_train_state, jit_train_step, make_train_step

    assert jax.device_count() == 8, jax.devices()
    compiles: list[str] = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, _, **kw: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration"
        else None)
    result: dict = {}
    cfg = config.apply_overrides(config.get_preset("digits"), FAST)
    model = build_model(cfg, (8, 8, 1))
    opt, obj = build_optimizer(cfg, 20), build_objective(cfg, model, 20)
    data = np.random.default_rng(0).uniform(size=(20 * 64, 8, 8, 1)).astype(np.float32)
    step = make_train_step(model, obj, opt)

    def run(mesh, mode):
        state, state_sh = sharding.init_sharded(
            lambda k: init_train_state(model, opt, obj, k),
            lambda s: sharding.train_state_shardings(s, mesh, mode), jax.random.key(0))
        batch_sh = sharding.batch_sharding(mesh, 4)
        fn = jit_train_step(step, state_sh, batch_sh)
        losses, compiled = [], []
        for b in range(20):
            batch = sharding.make_global_batch(data[b * 64:(b + 1) * 64], batch_sh, 64)
            before = len(compiles)
            state, m = fn(state, batch)
            compiled.append(len(compiles) - before)
            losses.append(float(m["loss"]))
        spec = lambda a: [None if p is None else str(p) for p in a.sharding.spec]
        return state, {
            "losses": losses, "compiled_per_step": compiled,
            "batch_spec": spec(batch), "batch_shard_shape": list(batch.addressable_shards[0].data.shape),
            "params": {jax.tree_util.keystr(p): {"shape": list(v.shape), "spec": spec(v)}
                       for p, v in jax.tree_util.tree_flatten_with_path(state.params)[0]},
            "opt_mu": {jax.tree_util.keystr(p): spec(v) for p, v in
                       jax.tree_util.tree_flatten_with_path(state.opt_state[0].mu)[0]},
            "step_spec": spec(state.step)}

    mesh1, mesh8 = sharding.make_mesh("1"), sharding.make_mesh("8")
    states = {}
    for name, mesh, mode in (("1", mesh1, "replicated"), ("8", mesh8, "replicated"), ("8fsdp", mesh8, "fsdp")):
        states[name], result[name] = run(mesh, mode)
        np.savez(outdir / f"params_{name}.npz", **_params_flat(jax.device_get(states[name].params)))

    # Sharded IWAE (examples over `data`) equals the single-device estimate.
    x = data[:40]
    key = jax.random.key(5)
    one = evaluate.iwae_log_likelihood(model, jax.device_get(states["1"].params), x, key, num_samples=30,
                                       batch_size=16, sample_chunk=7)
    eight = evaluate.iwae_log_likelihood(model, states["8fsdp"].params, x, key, num_samples=30, batch_size=16,
                                         sample_chunk=7, mesh=mesh8)
    fn = evaluate.make_iwae_fn(model, 30, 7, mesh=mesh8)
    xs = sharding.make_global_batch(x[:16], sharding.batch_sharding(mesh8, 4), 16)
    out = fn(states["8"].params, xs, key)
    result["iwae"] = {"one": one.log_px.tolist(), "eight": eight.log_px.tolist(),
                      "out_replicated": bool(out.sharding.is_fully_replicated)}

    # A sweep of 4 models on a 4-device mesh (models over `data`) equals the same sweep on one device.
    sweeps = {}
    for shape in ("1", "4"):
        base = config.apply_overrides(config.get_preset("digits"), [*FAST, f"mesh.shape={shape}"])
        res = sweep.run_sweep(base, {"objective.beta": ["0.5", "1", "2", "4"]}, outdir / f"sweep{shape}",
                              progress=False, log=lambda _: None)
        sweeps[shape] = {"elbo": [m["test_elbo"] for m in res["models"]],
                         "losses": [_losses(d) for d in sorted((outdir / f"sweep{shape}" / "models").iterdir())]}
    probe = jax.eval_shape(jax.vmap(lambda k: init_train_state(model, opt, obj, k)),
                           jnp.stack([jax.random.key(i) for i in range(4)]))
    specs = sharding.stacked_shardings(probe, sharding.make_mesh("4"))
    stacked = sorted({tuple(s.spec) for s in jax.tree.leaves(specs)})
    result["sweep"] = {**sweeps, "stacked_specs": [list(t) for t in stacked]}

    # The real training path (scan loop) on 8 devices; the 1-device run is also the multi-process reference.
    for shape in ("1", "8"):
        _fit_and_dump([f"mesh.shape={shape}"], outdir / f"fit{shape}", outdir / f"fit{shape}.npz")
    # Hierarchies with their stabilizers: a Ladder VAE (parameters sharded, FSDP); the top-down conv hierarchy has
    # its own worker (the extended tier: its 8-device compilations are most of this worker's time on 2 cores).
    for name in HIERARCHIES:
        if name not in EXTENDED_HIERARCHIES:
            worker_hierarchy(outdir, name)
    (outdir / "mesh8.json").write_text(json.dumps(result))


def worker_hierarchy(outdir: Path, name: str) -> None:
    """One hierarchy with its stabilizers, trained on a 1-device and an 8-device mesh."""
    for shape in ("1", "8"):
        mode = ["mesh.params=fsdp"] if shape == "8" and name == "ladder" else []
        _fit_and_dump([f"mesh.shape={shape}", *mode, *HIERARCHIES[name]], outdir / f"{name}{shape}",
                      outdir / f"{name}{shape}.npz")


def worker_process(outdir: Path, address: str, process_id: int) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from jaxvae import sharding

    how = sharding.maybe_initialize_distributed(address, 2, process_id)
    assert how is not None and jax.process_count() == 2 and jax.device_count() == 4, (how, jax.devices())
    # Each process loads only its own contiguous half of every global batch.
    rows = sharding.process_rows(sharding.batch_sharding(sharding.make_mesh(), 4), 64, (8, 8, 1))
    assert rows.tolist() == list(range(32 * process_id, 32 * (process_id + 1))), rows
    _fit_and_dump([], outdir / "multi", outdir / "multi.npz")
    jax.distributed.shutdown()


# --------------------------------------------------------------------------------------------- fixtures

def _env(devices: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAXVAE_", "SLURM_", "OMPI_"))}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO), JAXVAE_DISTRIBUTED="0")
    return env


# Only a guard against a hung worker, never a performance limit: the workers take 1-2 minutes on a quiet 2-core
# machine and several times that under load.
_HANG_GUARD_SECONDS = 3600


def _run(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen, timeout: float = _HANG_GUARD_SECONDS) -> None:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"worker timed out:\n{out[-4000:]}") from None
    assert proc.returncode == 0, f"worker failed (exit {proc.returncode}):\n{out[-6000:]}"


# The 8-device tests share one subprocess (the module fixture); xdist_group keeps them on one worker
# (`--dist loadgroup`), so it runs once. They are in the slow tier.
MESH8 = pytest.mark.xdist_group("mesh8")
# Execution-bound (the 8-device fixture took 679 s at -O0 against 85 s): the slow tier runs these at XLA's default.
pytestmark = pytest.mark.shipped_level


@pytest.fixture(scope="module")
def mesh8(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("mesh8")
    _wait(_run(["mesh8", str(outdir)], _env(8)))
    return outdir, json.loads((outdir / "mesh8.json").read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ tests

def _assert_params_close(a_path: Path, b_path: Path) -> None:
    a, b = np.load(a_path), np.load(b_path)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], rtol=TOL, atol=TOL, err_msg=k)


@pytest.mark.slow
@MESH8
def test_one_and_eight_device_meshes_train_the_same_model(mesh8):
    outdir, r = mesh8
    for name in ("8", "8fsdp"):
        np.testing.assert_allclose(r[name]["losses"], r["1"]["losses"], rtol=TOL, atol=TOL)
        _assert_params_close(outdir / "params_1.npz", outdir / f"params_{name}.npz")
    assert r["1"]["losses"][-1] < r["1"]["losses"][0]  # it trained


@pytest.mark.slow
@MESH8
def test_shardings_follow_the_rules_and_steps_compile_once(mesh8):
    _, r = mesh8
    for name in ("1", "8", "8fsdp"):  # 20 steps, one compilation (the first)
        assert r[name]["compiled_per_step"][0] >= 1 and not any(r[name]["compiled_per_step"][1:]), name
    # The batch is split over `data`: 8 examples per device of the 64.
    assert r["8"]["batch_spec"] == ["data", None, None, None] and r["8"]["batch_shard_shape"] == [8, 8, 8, 1]
    assert r["1"]["batch_shard_shape"] == [64, 8, 8, 1]
    assert r["8"]["step_spec"] == [] and r["8fsdp"]["step_spec"] == []
    for key, p in r["8"]["params"].items():  # data parallel: parameters replicated
        assert all(s is None for s in p["spec"]), key
    sharded = 0
    for key, p in r["8fsdp"]["params"].items():  # FSDP: the largest axis divisible by 8 goes over `data`
        fits = [i for i, d in enumerate(p["shape"]) if d % 8 == 0]
        want = [None] * len(p["shape"])
        if fits:
            want[max(fits, key=lambda i: (p["shape"][i], -i))] = "data"
            sharded += 1
        assert p["spec"] == want, (key, p)
        assert r["8fsdp"]["opt_mu"][key] == want, key  # Adam's moments live with their parameter
    assert sharded >= 4


@pytest.mark.slow
@MESH8
def test_sharded_iwae_equals_unsharded(mesh8):
    _, r = mesh8
    np.testing.assert_allclose(r["iwae"]["eight"], r["iwae"]["one"], rtol=TOL, atol=TOL)
    assert len(r["iwae"]["one"]) == 40 and r["iwae"]["out_replicated"]


@pytest.mark.slow
@MESH8
def test_sharded_sweep_equals_unsharded(mesh8):
    _, r = mesh8
    assert r["sweep"]["stacked_specs"] == [["data"]]  # every stacked leaf: models over `data`
    np.testing.assert_allclose(r["sweep"]["4"]["losses"], r["sweep"]["1"]["losses"], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(r["sweep"]["4"]["elbo"], r["sweep"]["1"]["elbo"], rtol=1e-4)


@pytest.mark.slow
@MESH8
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.extended) if n in EXTENDED_HIERARCHIES else n
                                  for n in sorted(HIERARCHIES)])
def test_hierarchies_train_on_eight_devices_like_on_one(name, request, tmp_path):
    if name in EXTENDED_HIERARCHIES:
        outdir = tmp_path
        _wait(_run(["hierarchy", str(outdir), name], _env(8)))
    else:
        outdir, _ = request.getfixturevalue("mesh8")
    one, eight = (json.loads((outdir / f"{name}{s}.json").read_text()) for s in ("1", "8"))
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=TOL, atol=TOL)
    _assert_params_close(outdir / f"{name}1.npz", outdir / f"{name}8.npz")
    assert set(one["summary"]["kl_groups"]) == set(eight["summary"]["kl_groups"]) == {"z1", "z2"}
    np.testing.assert_allclose(eight["summary"]["test_elbo"], one["summary"]["test_elbo"], rtol=1e-4)


@pytest.mark.slow
@MESH8
def test_fit_on_eight_devices_equals_one_device(mesh8):
    outdir, _ = mesh8
    one, eight = (json.loads((outdir / f"fit{s}.json").read_text()) for s in ("1", "8"))
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=TOL, atol=TOL)
    assert len(one["losses"]) == 4
    _assert_params_close(outdir / "fit1.npz", outdir / "fit8.npz")
    np.testing.assert_allclose(eight["summary"]["test_elbo"], one["summary"]["test_elbo"], rtol=1e-4)
    np.testing.assert_allclose(eight["summary"]["test_nll_iwae"], one["summary"]["test_nll_iwae"], rtol=1e-4)


@pytest.mark.slow
@MESH8
def test_two_processes_train_like_one(mesh8, tmp_path):
    outdir, _ = mesh8
    address = f"127.0.0.1:{_free_port()}"
    # No persistent compilation cache (the test suite's, see conftest.py) in a multi-process run: JAX writes its
    # entries from process 0 only, and the other process must compile its own part of the program.
    env = {**_env(2), "JAX_ENABLE_COMPILATION_CACHE": "false"}
    procs = [_run(["process", str(tmp_path), address, str(i)], env) for i in range(2)]
    for p in procs:
        _wait(p)
    multi = json.loads((tmp_path / "multi.json").read_text())
    one = json.loads((outdir / "fit1.json").read_text())
    np.testing.assert_allclose(multi["losses"], one["losses"], rtol=TOL, atol=TOL)
    _assert_params_close(outdir / "fit1.npz", tmp_path / "multi.npz")
    np.testing.assert_allclose(multi["summary"]["test_elbo"], one["summary"]["test_elbo"], rtol=1e-4)
    # Process 0 alone wrote the logs (no duplicated records); both took part in the Orbax checkpoint.
    assert len(multi["losses"]) == 4
    assert (tmp_path / "multi" / "checkpoints" / "20").is_dir()
    assert (tmp_path / "multi" / "summary.json").exists() and (tmp_path / "multi" / "samples.png").exists()


# ------------------------------------------------------------------------------------ in-process checks

def test_mesh_shape_parsing_and_errors():
    from jaxvae import config, sharding
    from jaxvae.errors import ConfigError

    assert sharding.parse_mesh_shape("auto") is None
    assert sharding.parse_mesh_shape("8") == (8,) and sharding.parse_mesh_shape("4x2") == (4, 2)
    assert sharding.mesh_axis_names((4, 2), ("data",)) == ("data", "model")
    with pytest.raises(ConfigError, match="not a mesh shape"):
        sharding.parse_mesh_shape("4by2")
    with pytest.raises(ConfigError, match=r"train\.batch_size=96 or train\.batch_size=104"):
        config.apply_overrides(config.get_preset("digits"), ["mesh.shape=8", "train.batch_size=100"])
    with pytest.raises(ConfigError, match=r"mesh\.params"):
        config.apply_overrides(config.get_preset("digits"), ["mesh.params=zero3"])
    with pytest.raises(ConfigError, match="xla_force_host_platform_device_count=4096"):
        sharding.make_mesh("4096")
    mesh = sharding.make_mesh()  # "auto": every device on `data`
    assert mesh.axis_names == ("data",) and mesh.devices.size == len(__import__("jax").devices())
    assert sharding.logical_spec("batch", None, mesh=mesh) == sharding.P(
        "data" if mesh.devices.size > 1 else None, None)


def test_distributed_start_up_decisions():
    from jaxvae import sharding
    from jaxvae.errors import ConfigError

    calls = []
    init = lambda **kw: calls.append(kw)
    assert sharding.maybe_initialize_distributed(env={}, initialize=init) is None
    assert sharding.maybe_initialize_distributed(env={"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"},
                                                 initialize=init) is None
    env = {"JAXVAE_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAXVAE_NUM_PROCESSES": "4", "JAXVAE_PROCESS_ID": "2"}
    assert sharding.maybe_initialize_distributed(env=env, initialize=init)
    assert calls[-1] == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}
    assert "SLURM" in sharding.maybe_initialize_distributed(env={"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"},
                                                            initialize=init)
    assert calls[-1] == {}  # jax.distributed.initialize() detects SLURM by itself
    assert "TPU" in sharding.maybe_initialize_distributed(env={"TPU_WORKER_HOSTNAMES": "a,b,c,d"},
                                                          initialize=init)
    assert sharding.maybe_initialize_distributed(env={"TPU_WORKER_HOSTNAMES": "a,b", "JAXVAE_DISTRIBUTED": "0"},
                                                 initialize=init) is None
    with pytest.raises(ConfigError, match="needs all three"):
        sharding.maybe_initialize_distributed("10.0.0.1:1234", env={}, initialize=init)
    with pytest.raises(ConfigError, match="process id 5"):
        sharding.maybe_initialize_distributed("h:1", 2, 5, env={}, initialize=init)


if __name__ == "__main__":
    if sys.argv[1] == "mesh8":
        worker_mesh8(Path(sys.argv[2]))
    elif sys.argv[1] == "hierarchy":
        import jax

        assert jax.device_count() == 8, jax.devices()
        worker_hierarchy(Path(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "process":
        worker_process(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown worker {sys.argv[1]!r}")
