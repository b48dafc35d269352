"""``python -m benchmarks NAME [options]``: user-runnable benchmarks; results are appended to RESULTS.md."""

import sys

USAGE = """usage: python -m benchmarks NAME [options]

benchmarks:
  throughput   training examples/s of jaxvae (scan and host loops) vs a plain JAX loop, PyTorch and pythae
  loops        scan vs host loop of jaxvae on the default presets' shapes (used to pick train.loop=auto)

Each takes --help. PyTorch runs in benchmarks/.venv-torch (create it with `make bench-torch-env`)."""


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    name, rest = sys.argv[1], sys.argv[2:]
    if name == "throughput":
        from benchmarks import throughput

        throughput.main(rest)
    else:
        print(f"unknown benchmark {name!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)


main()
