"""Sphinx extension: writes the CLI reference (from ``jaxvae.cli.build_parser``) and the config-key reference
(``jaxvae.config.describe_keys``: key, type, default and the comment that documents the field) into
``docs/reference/`` before each build, so both can never drift from the code."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from pathlib import Path


def _plain(text: str) -> str:
    """A docstring or comment for a Markdown table cell: Sphinx roles as code, no pipes or line breaks."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("|", "/").replace("\n", " ")


def config_reference() -> str:
    from jaxvae import config

    parts = ["# Config keys", "",
             "Every key of `jaxvae train --set KEY=VALUE` (and of `config.json`), generated from the "
             "dataclasses of `jaxvae/config.py` (`jaxvae config keys` prints the same): the type, the default "
             "of the bare config (presets change some: `jaxvae config show --preset NAME`) and the comment that "
             "documents the field. Tuples are given comma-separated (`model.hidden=512,256`).", ""]
    keys = config.describe_keys()
    for section in dataclasses.fields(config.Config):
        if not dataclasses.is_dataclass(section.default):
            continue
        cls = type(section.default)
        parts += [f"## `{section.name}`", "", _plain(inspect.getdoc(cls) or ""), "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        parts += [f"| `{k.key}` | `{k.type}` | `{k.default}` | {_plain(k.meaning)} |" for k in keys
                  if k.key.startswith(f"{section.name}.")]
        parts.append("")
    parts += ["## Presets", "", "| preset | description |", "|---|---|"]
    parts += [f"| `{name}` | {_plain(description)} |" for name, (description, _) in config.PRESETS.items()]
    return "\n".join(parts) + "\n"


def cli_reference() -> str:
    from jaxvae import cli

    parser = cli.build_parser()
    parts = ["# Command line", "",
             "`jaxvae COMMAND --help` prints the same; generated from the argparse parsers of "
             "`jaxvae/cli.py`.", "",
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
