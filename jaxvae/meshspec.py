"""The mesh settings as plain data: the axis names and the parsing of ``mesh.shape`` (no JAX import, so the
config layer validates them without importing :mod:`jaxvae.sharding`, which re-exports these names)."""

from __future__ import annotations

from collections.abc import Sequence

from jaxvae.errors import ConfigError

DATA_AXIS = "data"
PARAM_MODES = ("replicated", "fsdp")


def parse_mesh_shape(shape: str) -> tuple[int, ...] | None:
    """``"auto"`` -> ``None``; ``"8"`` -> ``(8,)``; ``"4x2"`` -> ``(4, 2)``. Raises :class:`ConfigError`."""
    text = str(shape).strip().lower()
    if text == "auto":
        return None
    try:
        dims = tuple(int(p) for p in text.replace(",", "x").split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"mesh.shape={shape!r} is not a mesh shape. Use 'auto' (all devices on the data axis), "
                          "one number such as mesh.shape=8, or sizes joined by 'x' such as mesh.shape=4x2.")
    return dims


def mesh_axis_names(shape: Sequence[int], axis_names: Sequence[str]) -> tuple[str, ...]:
    """The axis names for a mesh of ``shape``: ``axis_names`` when they match; the default ``("data",)`` grows
    to ``("data", "model")`` for a 2-D shape. Raises :class:`ConfigError` naming the fix otherwise."""
    names = tuple(axis_names)
    if len(shape) == 2 and names == (DATA_AXIS,):
        names = (DATA_AXIS, "model")
    if len(names) != len(shape):
        raise ConfigError(f"mesh.shape={'x'.join(map(str, shape))} has {len(shape)} axes but mesh.axis_names="
                          f"{','.join(names)} names {len(names)}; give one name per axis, e.g. "
                          f"mesh.axis_names={','.join([DATA_AXIS, 'model', 'extra'][:len(shape)])}.")
    if DATA_AXIS not in names:
        raise ConfigError(f"mesh.axis_names={','.join(names)} has no '{DATA_AXIS}' axis; the batch is split over "
                          f"'{DATA_AXIS}', so name one axis '{DATA_AXIS}'.")
    if len(set(names)) != len(names):
        raise ConfigError(f"mesh.axis_names={','.join(names)} repeats a name; axis names must be distinct.")
    return names
