"""Sphinx extension: writes the CLI reference (from ``jaxvae.cli.build_parser``) and the config-key reference
(from the dataclasses of ``jaxvae.config``: key, type, default and the comment that documents the field) into
``docs/reference/`` before each build, so both can never drift from the code."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import re
import tokenize
import typing
from pathlib import Path


def _field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}``: the comment on a field's line, else the comment lines right above it."""
    source = inspect.getsource(cls)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out = {}
    lines = source.splitlines()
    for number, line in enumerate(lines, start=1):
        match = re.match(r"\s+(\w+): [^=]+=", line)
        if not match:
            continue
        text = comments.get(number)
        if text is None or line.lstrip().startswith("#"):
            above, n = [], number - 1
            while n in comments and lines[n - 1].lstrip().startswith("#"):
                above.insert(0, comments[n])
                n -= 1
            text = " ".join(above) if above else ""
        out[match.group(1)] = text
    return out


def _type_name(annotation) -> str:
    text = annotation if isinstance(annotation, str) else (
        annotation.__name__ if isinstance(annotation, type) else str(annotation))
    return text.replace("typing.", "").replace(" | ", " or ")


def _plain(text: str) -> str:
    """A docstring or comment for a Markdown table cell: Sphinx roles as code, no pipes or line breaks."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("|", "/").replace("\n", " ")


def _config_rows(cls: type, prefix: str, rows: list[tuple[str, str, str, str]]) -> None:
    comments = _field_comments(cls)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if dataclasses.is_dataclass(default):
            _config_rows(type(default), f"{key}.", rows)
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else json.dumps(default)
        rows.append((key, _type_name(hints[field.name]), shown, comments.get(field.name, "")))


def config_reference() -> str:
    from jaxvae import config

    parts = ["# Config keys", "",
             "Every key of `jaxvae train --set KEY=VALUE` (and of `config.json`), generated from the dataclasses of "
             "`jaxvae/config.py`: the type, the default of the bare config (presets change some: "
             "`jaxvae config show --preset NAME`) and the comment that documents the field. Tuples are given "
             "comma-separated (`model.hidden=512,256`).", ""]
    for section in dataclasses.fields(config.Config):
        if section.name == "preset":
            continue
        cls = type(section.default)
        rows: list[tuple[str, str, str, str]] = []
        _config_rows(cls, f"{section.name}.", rows)
        parts += [f"## `{section.name}`", "", _plain(inspect.getdoc(cls) or ""), "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        parts += [f"| `{k}` | `{t}` | `{d}` | {_plain(m)} |" for k, t, d, m in rows]
        parts.append("")
    parts += ["## Presets", "", "| preset | description |", "|---|---|"]
    parts += [f"| `{name}` | {_plain(description)} |" for name, (description, _) in config.PRESETS.items()]
    return "\n".join(parts) + "\n"


def cli_reference() -> str:
    from jaxvae import cli

    parser = cli.build_parser()
    parts = ["# Command line", "",
             "`jaxvae COMMAND --help` prints the same; generated from the argparse parsers of `jaxvae/cli.py`.", "",
             "```text", parser.format_help().rstrip(), "```", ""]
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in actions[0].choices.items():
        parts += [f"## `jaxvae {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        for inner_name, inner in (nested[0].choices.items() if nested else []):
            parts += [f"### `jaxvae {name} {inner_name}`", "", "```text", inner.format_help().rstrip(), "```", ""]
    return "\n".join(parts) + "\n"


def _write(app) -> None:
    out = Path(app.srcdir) / "reference"
    out.mkdir(exist_ok=True)
    for name, text in (("cli.md", cli_reference()), ("config.md", config_reference())):
        path = out / name
        if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
            path.write_text(text)


def setup(app):
    app.connect("builder-inited", _write)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
