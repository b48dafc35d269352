"""``python -m jaxvae`` is the ``jaxvae`` command."""

import sys

from jaxvae.cli import main

sys.exit(main())
