"""The description of every key, read from the comments of the schema (``jaxvae config keys`` and
the documentation's config reference)."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import NamedTuple

from jaxvae.config.schema import Config


class KeyDescription(NamedTuple):
    """One config key as :func:`describe_keys` documents it."""

    key: str  # dotted, e.g. "model.latent_dim"
    type: str  # e.g. "int", "tuple[int, ...]", "str or None"
    default: str  # the bare config's default as written on the command line
    meaning: str  # the comment that documents the field in this module


def _field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` of a config dataclass, read from this module's source: the comment lines right above a
    field without a comment on its own line; for a field with one, that comment. Comment lines right below a
    field's comment that ends with a comma continue it; other comment lines above a field with its own comment
    are a note on the section."""
    import inspect
    import io
    import tokenize

    source = inspect.getsource(cls)
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out: dict[str, str] = {}
    above: list[str] = []  # comment lines since the last code line
    previous: str | None = None  # the field on the last code line, if it has a comment of its own
    for number, line in enumerate(source.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            above.append(comments[number])
            continue
        match = re.match(r"\s+(\w+): [^=]+=", line)
        name = match.group(1) if match else None
        if above and previous is not None and out[previous].endswith(","):
            out[previous] += " " + " ".join(above)
            above = []
        if name is not None:
            out[name] = comments[number] if number in comments else " ".join(above)
        previous = name if name is not None and number in comments else None
        above = []
    return out


def describe_keys() -> list[KeyDescription]:
    """Every config key with its type, default and meaning (``jaxvae config keys``; the documentation's config
    reference is generated from this)."""
    out: list[KeyDescription] = []

    def walk(cls: type, prefix: str) -> None:
        comments, hints = _field_comments(cls), typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            default = field.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{field.name}.")
                continue
            kind = hints[field.name]
            kind = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else (
                "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default))
            out.append(KeyDescription(f"{prefix}{field.name}", kind.replace(" | ", " or "), shown,
                                      comments.get(field.name, "")))

    for section in dataclasses.fields(Config):
        if dataclasses.is_dataclass(section.default):
            walk(type(section.default), f"{section.name}.")
    return out
