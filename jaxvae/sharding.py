"""Device meshes, shardings and multi-host start-up: the same command trains on a laptop and on a pod slice.

* :func:`make_mesh` builds a :class:`jax.sharding.Mesh` from ``mesh.shape`` (``"auto"``: all devices on one
  ``data`` axis; ``"8"``; ``"4x2"``) with ``jax.make_mesh``.
* :data:`LOGICAL_AXIS_RULES` is the one table that maps logical array axes (``batch``, ``models``, ``fsdp``,
  ``hidden``) to mesh axes; :func:`logical_spec` turns logical names into a :class:`jax.P`.
* Data parallel by default: the batch is split over ``data``, parameters and optimizer state are replicated.
  With ``mesh.params=fsdp`` every parameter (and its optimizer moments) is split along its largest axis that
  the ``data`` axis size divides (FSDP / ZeRO-3 style); XLA inserts the all-gathers and reduce-scatters.
* :func:`init_sharded` creates a state directly in its shardings (``jax.eval_shape``, then
  ``jax.jit(init, out_shardings=...)``): no host or single-device copy of the full state ever exists.
* :func:`make_global_batch` assembles a global batch from each process's own rows
  (``jax.make_array_from_process_local_data``); :func:`process_rows` says which rows a process must load.
* :func:`maybe_initialize_distributed` calls ``jax.distributed.initialize`` when flags, ``JAXVAE_*`` variables
  or the cluster environment (Cloud TPU VM pod slices, SLURM, Open MPI) say the run spans several processes.

Everything here is host-side set-up; the compiled steps only see :class:`jax.NamedSharding` annotations.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxvae.errors import ConfigError
from jaxvae.meshspec import (
    DATA_AXIS,
    PARAM_MODES,
    mesh_axis_names,
    parse_mesh_shape,
)

P = jax.sharding.PartitionSpec
NamedSharding = jax.sharding.NamedSharding
Mesh = jax.sharding.Mesh

# Logical axis -> mesh axis (None: replicated). A logical axis whose mesh axis is absent from the mesh is
# replicated, so one table serves 1-D (``data``) and 2-D (``data`` x ``model``) meshes.
LOGICAL_AXIS_RULES: Mapping[str, str | None] = {
    "batch": DATA_AXIS,  # examples of a training / evaluation batch
    "models": DATA_AXIS,  # the stacked-model axis of a sweep
    "fsdp": DATA_AXIS,  # the parameter axis that mesh.params=fsdp splits
    "hidden": "model",  # a second parameter axis split over an optional "model" mesh axis (tensor parallel)
    "latent": None,
    "event": None,
}


# ------------------------------------------------------------------------------------------------ meshes

def make_mesh(shape: str = "auto", axis_names: Sequence[str] = (DATA_AXIS,), *,
              devices: Sequence[Any] | None = None) -> Mesh:
    """The mesh of ``mesh.shape`` over ``devices`` (default: all of ``jax.devices()``, every process's).

    ``"auto"`` puts all devices on the ``data`` axis. A mesh smaller than the device count uses the first
    devices (single-process only: a multi-process mesh must span every process's devices).
    """
    devices = list(jax.devices() if devices is None else devices)
    dims = parse_mesh_shape(shape) or (len(devices),)
    names = mesh_axis_names(dims, axis_names if parse_mesh_shape(shape) else (DATA_AXIS,))
    size = math.prod(dims)
    kind = devices[0].platform
    if size > len(devices):
        hint = ("simulate CPU devices with XLA_FLAGS=--xla_force_host_platform_device_count="
                f"{size} (set before JAX starts)" if kind == "cpu" else "use mesh.shape=auto")
        raise ConfigError(f"mesh.shape={shape} needs {size} devices but JAX sees {len(devices)} ({kind}); "
                          f"{hint}, or choose a mesh of at most {len(devices)} devices.")
    if size < len(devices) and jax.process_count() > 1:
        raise ConfigError(f"mesh.shape={shape} uses {size} of the {len(devices)} devices of this "
                          f"{jax.process_count()}-process run; a multi-process mesh must use all of them "
                          "(mesh.shape=auto).")
    axis_types = (jax.sharding.AxisType.Auto,) * len(dims)
    return jax.make_mesh(dims, names, axis_types, devices=devices[:size])


def mesh_from_config(cfg: Any) -> Mesh:
    """:func:`make_mesh` from a :class:`jaxvae.config.Config` (its ``mesh`` section)."""
    return make_mesh(cfg.mesh.shape, cfg.mesh.axis_names)


def data_axis_size(mesh: Mesh) -> int:
    """Number of devices along the ``data`` axis (the batch is split that many ways)."""
    return int(mesh.shape[DATA_AXIS])


def describe(mesh: Mesh) -> str:
    """``"8 cpu devices, mesh data=8"``: for logs."""
    axes = " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return f"{mesh.devices.size} {mesh.devices.flat[0].platform} device(s){processes}, mesh {axes}"


def check_batch_size(batch_size: int, mesh: Mesh, key: str = "train.batch_size") -> None:
    """Raises :class:`ConfigError` unless ``batch_size`` splits evenly over the ``data`` axis."""
    n = data_axis_size(mesh)
    if batch_size % n:
        lower, upper = (batch_size // n) * n, (batch_size // n + 1) * n
        options = " or ".join(f"{key}={v}" for v in (lower, upper) if v > 0)
        raise ConfigError(f"{key}={batch_size} does not split over the {n} devices of the mesh's '{DATA_AXIS}' "
                          f"axis (mesh.shape={'x'.join(str(s) for s in mesh.shape.values())}): the global batch "
                          f"is per-device batch x {n}. Use {options} (a multiple of {n}), or a mesh whose data "
                          f"axis divides {batch_size}.")


# ------------------------------------------------------------------------------------------- shardings

def logical_spec(*logical_axes: str | None, mesh: Mesh | None = None,
                 rules: Mapping[str, str | None] = LOGICAL_AXIS_RULES) -> P:
    """``logical_spec("batch", None)`` -> ``P("data", None)``: logical axis names through the rules table.

    Axes mapped to a mesh axis that ``mesh`` lacks (or of size 1) are replicated.
    """
    out = []
    for name in logical_axes:
        axis = None if name is None else rules.get(name)
        if axis is not None and mesh is not None and mesh.shape.get(axis, 1) == 1:
            axis = None
        out.append(axis)
    return P(*out)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading (example) axis over ``data``, the other ``ndim - 1`` axes replicated: ``P("data", None, ...)``."""
    return NamedSharding(mesh, logical_spec("batch", *([None] * (ndim - 1)), mesh=mesh))


def batch_sharding_like(mesh: Mesh, data: Any) -> Any:
    """:func:`batch_sharding` for a batch that may be a pytree (a conditioned batch of
    :mod:`jaxvae.models.conditional`): one sharding per leaf, of the leaf's rank (a single sharding for an
    array)."""
    if isinstance(data, (np.ndarray, jax.Array)):
        return batch_sharding(mesh, data.ndim)
    return jax.tree.map(lambda a: batch_sharding(mesh, a.ndim), data)


def constrain_batch(x: Any, mesh: Mesh) -> Any:
    """``x`` (an array or a pytree of arrays, examples first) constrained to :func:`batch_sharding` inside a
    traced function."""
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, batch_sharding(mesh, a.ndim)), x)


def _leaf_spec(shape: Sequence[int], mesh: Mesh, logical: Sequence[str]) -> P:
    """Assigns each logical axis of ``logical`` (e.g. ``("fsdp", "hidden")``) to the largest array axis its mesh
    axis size divides, not yet taken; an array axis that nothing divides stays replicated."""
    spec: list[str | None] = [None] * len(shape)
    for name in logical:
        axis = LOGICAL_AXIS_RULES.get(name)
        size = mesh.shape.get(axis, 1) if axis else 1
        if size == 1:
            continue
        fits = [i for i, d in enumerate(shape) if spec[i] is None and d % size == 0]
        if fits:
            spec[max(fits, key=lambda i: (shape[i], -i))] = axis
    return P(*spec)


def param_shardings(params: Any, mesh: Mesh, mode: str = "replicated") -> Any:
    """Shardings for a parameter pytree (arrays or ``jax.ShapeDtypeStruct``-s), same structure.

    ``replicated``: every leaf on every device (data parallel), except that a ``model`` mesh axis, when present,
    splits each leaf's largest divisible axis (``hidden`` rule). ``fsdp``: additionally each leaf's largest axis
    that the ``data`` axis size divides is split over ``data``; leaves without such an axis are replicated.
    """
    if mode not in PARAM_MODES:
        raise ConfigError(f"mesh.params={mode!r} is not valid; choose one of: {', '.join(PARAM_MODES)}.")
    logical = ("fsdp", "hidden") if mode == "fsdp" else ("hidden",)
    return jax.tree.map(lambda a: NamedSharding(mesh, _leaf_spec(np.shape(a), mesh, logical)), params)


def train_state_shardings(state: Any, mesh: Mesh, mode: str = "replicated") -> Any:
    """Shardings of a :class:`~jaxvae.training.step.TrainState` (arrays or shapes): parameters and optimizer state
    by
    :func:`param_shardings` (an optimizer moment has its parameter's shape, so it gets the same layout; scalar
    counters are replicated) and so is the model's non-gradient state; step, key, counters and objective state
    replicated."""
    rep = replicated(mesh)
    return state._replace(
        step=rep, key=rep, nonfinite_total=rep, nonfinite_consecutive=rep,
        params=param_shardings(state.params, mesh, mode),
        opt_state=param_shardings(state.opt_state, mesh, mode),
        obj_state=jax.tree.map(lambda _: rep, state.obj_state),
        model_state=param_shardings(state.model_state, mesh, mode))


def stacked_shardings(tree: Any, mesh: Mesh) -> Any:
    """Shardings for pytrees stacked on a leading model axis ``[N, ...]`` (a sweep): ``N`` over ``data`` when the
    data axis size divides it, else replicated (see :func:`stacked_axis_is_sharded`)."""
    def one(a):
        n = np.shape(a)[0] if np.ndim(a) else 0
        spec = logical_spec("models", mesh=mesh) if n and n % data_axis_size(mesh) == 0 else P()
        return NamedSharding(mesh, spec)

    return jax.tree.map(one, tree)


def stacked_axis_is_sharded(num_models: int, mesh: Mesh) -> bool:
    return data_axis_size(mesh) > 1 and num_models % data_axis_size(mesh) == 0


def init_sharded(init_fn: Callable[..., Any], shardings_fn: Callable[[Any], Any], *args: Any) -> tuple[Any, Any]:
    """Creates ``init_fn(*args)`` directly in its shardings; returns ``(value, shardings)``.

    ``jax.eval_shape`` gives the state's shapes without computing it, ``shardings_fn(shapes)`` their layout, and
    ``jax.jit(init_fn, out_shardings=...)`` computes every shard on its own device.
    """
    shapes = jax.eval_shape(init_fn, *args)
    shardings = shardings_fn(shapes)
    return jax.jit(init_fn, out_shardings=shardings)(*args), shardings


def process_rows(sharding: jax.sharding.Sharding, global_batch: int, trailing: Sequence[int] = ()) -> np.ndarray:
    """The rows of a global batch ``[global_batch, *trailing]`` that this process's devices hold under
    ``sharding``, in the order ``make_array_from_process_local_data`` expects them (int ``[local_batch]``).

    With ``P("data", ...)`` and devices ordered by process (``jax.make_mesh``), these are one contiguous block:
    process ``p`` of ``P`` loads rows ``[p * B / P, (p + 1) * B / P)``.
    """
    sharding = jax.tree.leaves(sharding)[0]  # a conditioned batch: the examples' sharding comes first
    index_map = sharding.addressable_devices_indices_map((global_batch, *trailing))
    starts = sorted({(idx[0].start or 0, global_batch if idx[0].stop is None else idx[0].stop)
                     for idx in index_map.values()})
    return np.concatenate([np.arange(a, b) for a, b in starts]) if starts else np.arange(0)


def make_global_batch(local: np.ndarray, sharding: jax.sharding.Sharding, global_batch: int) -> jax.Array:
    """The global array ``[global_batch, *E]`` whose rows :func:`process_rows` are ``local [local_batch, *E]``.

    Single process: ``local`` is the whole batch and this is a sharded ``device_put``.
    """
    if not isinstance(local, (np.ndarray, jax.Array)):  # a conditioned batch: every leaf
        place = lambda a, s: jax.make_array_from_process_local_data(s, a, (global_batch, *a.shape[1:]))
        return jax.tree.map(place, local, sharding)
    return jax.make_array_from_process_local_data(sharding, local, (global_batch, *local.shape[1:]))


def to_host(tree: Any) -> Any:
    """A pytree of global arrays as host numpy arrays, on every process (an all-gather across processes when
    the arrays span several; every process must call it)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def host_local(params: Any) -> Any:
    """Parameters for host-side evaluations (validation, monitor, images): as they are in one process; as numpy
    copies in a multi-process run, so that each process evaluates locally without cross-process calls."""
    return to_host(params) if jax.process_count() > 1 else params


def is_main_process() -> bool:
    """True on process 0, the one that writes logs, metrics, images and summaries."""
    return jax.process_index() == 0


# ----------------------------------------------------------------------------------------- multi-host

ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = ("JAXVAE_COORDINATOR_ADDRESS", "JAXVAE_NUM_PROCESSES",
                                                      "JAXVAE_PROCESS_ID")
ENV_DISTRIBUTED = "JAXVAE_DISTRIBUTED"  # "1": let jax.distributed.initialize() detect the cluster; "0": never


def _cluster_detected(env: Mapping[str, str]) -> str | None:
    """The name of a multi-process environment that ``jax.distributed.initialize()`` configures by itself."""
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env:
        return "SLURM"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "Open MPI"
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "Cloud TPU pod slice"
    return None


def maybe_initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None, *,
                                 env: Mapping[str, str] | None = None,
                                 initialize: Callable[..., None] | None = None) -> str | None:
    """Starts JAX's multi-process runtime when this run spans several processes; returns how, or ``None``.

    Order: explicit arguments (the CLI's ``--coordinator-address/--num-processes/--process-id``), then
    ``$JAXVAE_COORDINATOR_ADDRESS``, ``$JAXVAE_NUM_PROCESSES``, ``$JAXVAE_PROCESS_ID`` (GPU clusters without a
    scheduler JAX knows), then ``$JAXVAE_DISTRIBUTED=1`` or a detected cluster (multi-host Cloud TPU VMs, SLURM
    with several tasks, Open MPI), for which ``jax.distributed.initialize()`` finds everything itself.
    ``$JAXVAE_DISTRIBUTED=0`` turns detection off. Must run before any other JAX call; idempotent.
    """
    env = os.environ if env is None else env
    initialize = jax.distributed.initialize if initialize is None else initialize
    if jax.distributed.is_initialized():
        return "already initialized"
    coordinator_address = coordinator_address or env.get(ENV_COORDINATOR) or None
    try:
        num_processes = num_processes if num_processes is not None else (
            int(env[ENV_NUM_PROCESSES]) if env.get(ENV_NUM_PROCESSES) else None)
        process_id = process_id if process_id is not None else (
            int(env[ENV_PROCESS_ID]) if env.get(ENV_PROCESS_ID) else None)
    except ValueError:
        raise ConfigError(f"${ENV_NUM_PROCESSES} and ${ENV_PROCESS_ID} must be integers; got "
                          f"{env.get(ENV_NUM_PROCESSES)!r} and {env.get(ENV_PROCESS_ID)!r}.") from None
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given):
        if not all(given):
            raise ConfigError("A multi-process run needs all three of the coordinator address (host:port of "
                              "process 0), the number of processes and this process's id: pass "
                              "--coordinator-address, --num-processes and --process-id (or set "
                              f"${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID}).")
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"process id {process_id} must be in [0, {num_processes}) for {num_processes} "
                              "processes.")
        if num_processes == 1:
            return None
        initialize(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
        return f"coordinator {coordinator_address}, process {process_id} of {num_processes}"
    flag = env.get(ENV_DISTRIBUTED, "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return None
    detected = "requested by $JAXVAE_DISTRIBUTED" if flag in ("1", "true", "yes", "on", "auto") else (
        _cluster_detected(env))
    if detected is None:
        return None
    initialize()
    return f"auto-detected ({detected})"
