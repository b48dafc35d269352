"""jaxvae benchmarks: run as a user would, ``python -m benchmarks <name>`` (see ``--help``)."""
