"""Dotted overrides (``--set section.key=value``), parsed by the field's declared type: malformed values
are refused, never reinterpreted."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from jaxvae.catalog import Components
from jaxvae.config.schema import Config, all_keys, canonical_key, closest_hint, field_types, is_section, type_name
from jaxvae.config.validation import validate
from jaxvae.errors import ConfigError


def _parse_tuple(text: str, item_type: Any, key: str) -> tuple:
    """A comma-separated list (optionally in parentheses or brackets; ``""`` or ``()`` is the empty list) of
    values of ``item_type``, every item present: ``8,,4``, ``8,x`` and ``4x2`` are refused, never reinterpreted."""
    inner = text.strip()
    if len(inner) >= 2 and (inner[0], inner[-1]) in (("(", ")"), ("[", "]")):
        inner = inner[1:-1].strip()
    if not inner:
        return ()
    parts = [p.strip() for p in inner.split(",")]
    if len(parts) > 1 and parts[-1] == "" and text.strip()[:1] in "([":
        parts = parts[:-1]  # a one-item tuple written as Python writes it: (8,)
    what = {int: "integers", float: "numbers", str: "names"}.get(item_type, type_name(item_type))
    example = {int: "100,50", float: "0.5,1.0", str: "a,b"}.get(item_type, "...")
    bad = [f"{p!r} (item {i + 1})" for i, p in enumerate(parts) if not _is_item(p, item_type)]
    if bad:
        one = {int: "an integer", float: "a number", str: "a name"}.get(item_type, "valid")
        verdict = f"is not {one}" if len(bad) == 1 else f"are not {what}"
        raise ConfigError(f"{key}={text!r}: expected a comma-separated list of {what}, e.g. {key}={example} (or "
                          f"{key}= for none); {', '.join(bad)} {verdict}.")
    return tuple(_parse_value(p, item_type, key) for p in parts)


def _is_item(text: str, item_type: Any) -> bool:
    if not text:
        return False
    if item_type is str:
        return "=" not in text and not any(c.isspace() for c in text)
    if item_type is int:
        return re.fullmatch(r"[+-]?\d+", text) is not None
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parses ``text`` as a value of the field type ``annotation`` (int, float, bool, str, tuples, Optional)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.strip().lower() in ("none", "null", ""):
            return None
        return _parse_value(text, args[0], key)
    if origin is tuple:
        return _parse_tuple(text, typing.get_args(annotation)[0], key)
    try:
        if annotation is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if annotation is int:
            as_float = float(text)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        if annotation is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected {annotation.__name__}.") from None
    return text


def _check_typed(value: Any, annotation: Any, key: str) -> Any:
    """A value given already typed (a Python mapping, a JSON config file): checked against the field's type, never
    converted between kinds (``8.5`` for an integer, ``"x"`` in a list of integers and a number for a list are
    refused); an integer is accepted for a float, a list for a tuple."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _check_typed(value, args[0], key)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r}: expected a list of {type_name(item_type)} (e.g. [100, 50]), got "
                              f"{type(value).__name__}.")
        return tuple(_check_typed(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation in (bool, str) and type(value) is annotation:
        return value
    raise ConfigError(f"{key}={value!r}: expected {type_name(annotation)}, got {type(value).__name__}.")


def _replace_path(node: Any, path: list[str], value: Any, key: str) -> Any:
    """``node`` (a config dataclass) with the field at ``path`` set to ``value`` (strings parsed by type)."""
    types_ = field_types(type(node))
    name = path[0]
    if name not in types_:
        where = f"'{key.rsplit('.', len(path))[0]}'" if len(path) < len(key.split(".")) else "the config"
        raise ConfigError(f"Unknown config key {key!r}.{closest_hint(key, all_keys())} "
                          f"Valid keys in {where}: {', '.join(types_)}.")
    annotation = types_[name]
    if len(path) > 1:
        if not is_section(annotation):
            raise ConfigError(f"Unknown config key {key!r}: {name} is a setting, not a section.")
        return dataclasses.replace(node, **{name: _replace_path(getattr(node, name), path[1:], value, key)})
    if is_section(annotation):
        fields = ", ".join(f"{key}.{f.name}" for f in dataclasses.fields(annotation))
        raise ConfigError(f"{key} is a section of settings, not a setting; set its keys: {fields}.")
    if isinstance(value, str):
        value = _parse_value(value, annotation, key)
    else:
        value = _check_typed(value, annotation, key)
    return dataclasses.replace(node, **{name: value})


def apply_overrides(cfg: Config, overrides: Iterable[str] | Mapping[str, Any], *,
                    components: Components | None = None) -> Config:
    """Returns ``cfg`` with ``"section.key=value"`` overrides applied (strings parsed by field type).

    Keys are dotted paths (``model.latent_dim``, ``objective.capacity.nats``); the older flat names of
    :data:`~jaxvae.config.schema.LEGACY_KEYS` are accepted. A mapping ``{"section.key": value}`` with already-typed
    values is accepted too. The result is validated (``components``: see
    :func:`~jaxvae.config.validation.validate`).

    >>> from jaxvae.config import get_preset
    >>> cfg = apply_overrides(get_preset("digits"), ["model.latent_dim=16", "objective.beta=4"])
    >>> cfg.model.latent_dim, cfg.objective.beta
    (16, 4.0)
    >>> apply_overrides(cfg, ["model.latnt_dim=2"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    jaxvae.errors.ConfigError: Unknown config key 'model.latnt_dim'. Did you mean 'model.latent_dim'? ...
    """
    items = overrides.items() if isinstance(overrides, Mapping) else (_split_override(o) for o in overrides)
    for key, value in items:
        key = canonical_key(key)
        path = key.split(".")
        if len(path) < 2 or path[0] == "preset" or not all(path):
            raise ConfigError(f"Unknown config key {key!r}.{closest_hint(key, all_keys())} "
                              "Keys look like 'model.latent_dim'; see `jaxvae config show` for all of them.")
        cfg = _replace_path(cfg, path, value, key)
    validate(cfg, components=components)
    return cfg


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"Override {text!r} is not of the form KEY=VALUE (e.g. model.latent_dim=16).")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()
