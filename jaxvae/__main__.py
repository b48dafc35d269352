"""``python -m jaxvae`` is the ``jaxvae`` command."""

from jaxvae.cli import console_main

console_main()
