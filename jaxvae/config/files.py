"""Configs as JSON and YAML files (``config.json`` in every run directory) and the differences between
two configs."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxvae.catalog import Components
from jaxvae.config.overrides import apply_overrides
from jaxvae.config.presets import PRESETS, get_preset
from jaxvae.config.schema import Config, all_keys, closest_hint, get_value
from jaxvae.errors import ConfigError


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_json(cfg: Config) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_dict(d: Mapping[str, Any], *, components: Components | None = None) -> Config:
    """Inverse of :func:`to_dict` (lists become tuples); unknown keys raise :class:`ConfigError`. Sections or
    keys left out keep the values of ``d["preset"]`` (a name of :data:`PRESETS`), else of the bare config."""
    preset = d.get("preset")
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise ConfigError(f"preset={preset!r} is not a preset.{closest_hint(str(preset), PRESETS)} Available "
                          f"presets: {', '.join(PRESETS)}.")
    cfg = get_preset(preset) if preset is not None else Config()
    cfg = dataclasses.replace(cfg, preset=d.get("preset", cfg.preset))
    flat: dict[str, Any] = {}

    def walk(prefix: str, values: Mapping[str, Any]) -> None:
        for field, value in values.items():
            if isinstance(value, Mapping):
                walk(f"{prefix}{field}.", value)
            else:
                flat[f"{prefix}{field}"] = tuple(value) if isinstance(value, list) else value

    for section, values in d.items():
        if section == "preset":
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"Config section {section!r} must be a mapping.")
        walk(f"{section}.", values)
    return apply_overrides(cfg, flat, components=components)


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """A config file as a dict: JSON (the format of a run's ``config.json``) or YAML (``.yaml``/``.yml``), all or
    some of the sections (``{"model": {"latent_dim": 16}, "train": {"steps": 2000}}``), optionally with
    ``"preset"``. Raises :class:`ConfigError` naming the file for a missing file or a syntax error."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror}). Give the path of a JSON or YAML "
                          "config file, e.g. a run's config.json.") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"--config {path}: not valid YAML{where} ({getattr(e, 'problem', e)}).") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config {path}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}). "
                              "YAML files need the suffix .yaml or .yml.") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"--config {path}: the file must hold a mapping of sections (e.g. {{\"model\": "
                          f"{{\"latent_dim\": 16}}}}), not a {type(data).__name__}.")
    return dict(data)


def from_file(path: str | os.PathLike, *, preset: str | None = None,
              components: Components | None = None) -> Config:
    """The config of a file (:func:`read_file`) on top of its ``"preset"`` (or ``preset``; the two may not
    disagree), validated; every error names the file."""
    data = read_file(path)
    named = data.get("preset")
    if preset is not None and named is not None and named != preset:
        raise ConfigError(f"--config {path} is for preset {named!r}, and --preset {preset} names another; leave "
                          "out one of them.")
    if preset is not None:
        data["preset"] = preset
    try:
        return from_dict(data, components=components)
    except ConfigError as e:
        raise ConfigError(f"{e} (in {path})") from None


def from_saved(path: str | os.PathLike) -> Config:
    """The config in a run directory's ``config.json``; a damaged file or a refused value says where it came
    from (:class:`ConfigError`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): this run "
                          "directory's config is damaged. Restore it, or start a new run with another --workdir."
                          ) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a jaxvae config: this run directory's "
                          "config is damaged. Restore it, or start a new run with another --workdir.")
    try:
        return from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{e} This value comes from {path}, the run's saved config: correct it there, or start "
                          "a new run with another --workdir.") from None


# Settings that change how a run is reported or paced, not what it computes: resuming a run with other values is
# allowed.
REPORTING_ONLY = ("track.", "train.max_chunk_seconds")


def diff(a: Config, b: Config, *, ignore: Sequence[str] = ()) -> list[str]:
    """Human-readable differences ``'key: a -> b'`` between two configs (keys starting with a prefix in
    ``ignore`` left out)."""
    out = []
    for key in all_keys():
        if key.startswith(tuple(ignore)):
            continue
        va, vb = get_value(a, key), get_value(b, key)
        if va != vb:
            out.append(f"{key}: {va!r} -> {vb!r}")
    return out
