"""Plumbing for every pytest run in this repository: the test suite (tests/) and the notebooks (nbmake)."""

import os
import sys
from pathlib import Path

# JAX's persistent compilation cache for the test suite and the notebooks (`make test`, `make test-slow`, `make
# notebooks`) and the CLI subprocesses and notebook kernels they start (they inherit the environment): most of a
# test's time on a CPU is XLA compiling programs that another test, or the same test's resumed run, compiled
# already. A hit loads the same executable, so results are bitwise those of a fresh compilation (the golden hashes
# check it). The directory is git-ignored; JAXVAE_TEST_COMPILATION_CACHE=0 turns it off, and a
# JAX_COMPILATION_CACHE_DIR of your own wins. (No size bound: with one, JAX rescans the whole directory on every
# write, which cost more than it saved. An entry read while another process writes it fails to load with a warning
# and is compiled again.)
COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(Path(__file__).resolve().parent / ".cache" / "jax"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
if os.environ.get("JAXVAE_TEST_COMPILATION_CACHE", "1") != "0":
    for _name, _value in COMPILATION_CACHE.items():
        os.environ.setdefault(_name, _value)
    if "jax" in sys.modules:  # imported before this file (a plugin): set what it read from the environment
        import jax

        for _name in COMPILATION_CACHE:
            jax.config.update(_name.lower(), type(getattr(jax.config, _name.lower()))(os.environ[_name]))
