"""Short runs of every preset that trains offline, and their final ``params_sha256``: the golden file that proves
a change to the core leaves results bitwise unchanged (``tests/test_golden.py``).

Each preset trains ``STEPS`` steps exactly as configured, on synthetic data of the preset's shape (always
available) and, where ``../shared/data`` has it, on the real dataset. Only the evaluation is shrunk (it does not
touch the parameters).

Hashes are bitwise properties of one XLA build on one kind of CPU, so the file holds one entry per platform
(versions and :func:`cpu_fingerprint`); the test runs where an entry matches and skips elsewhere. Add this
platform's entry from a checkout of the reference commit, or regenerate (only when a change of results is
intended, and say why in the commit)::

    .venv/bin/python -m tests.golden.presets --write --recorded-from COMMIT          # synthetic-data runs
    .venv/bin/python -m tests.golden.presets --write --real --recorded-from COMMIT   # plus the real-data runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("params_sha256.json")
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
STEPS = 200
EVAL = ["eval.num_samples=4", "eval.max_examples=64"]

# preset -> (synthetic event shape, kind of values) ; kinds: grey (uint8 0..255), binary (0/1)
SYNTHETIC = {
    "digits": None,  # the embedded dataset itself
    "mnist": ((28, 28), "grey"),
    "binarized-mnist": ((28, 28), "binary"),
    "mnist-dynamic": ((28, 28), "grey"),
    "fashion-mnist": ((28, 28, 1), "grey"),
    "frey": ((28, 20), "grey"),
    "cifar10": ((32, 32, 3), "grey"),
}
REAL = {
    "mnist": "mnist",
    "binarized-mnist": "binarized_mnist",
    "mnist-dynamic": "mnist",
    "frey": "frey_faces",
}


_ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "bmi", "sse4", "vnni", "vaes", "vpclmul", "gfni")


def cpu_fingerprint() -> str:
    """The CPU that XLA:CPU compiles for: vendor model, family/model numbers and its vector-ISA flags (XLA picks
    kernels by these, so a hash holds for one such CPU only)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    flags = sorted(f for f in info.get("flags", "").split() if f.startswith(_ISA_PREFIXES))
    return (f"{info.get('vendor_id', '?')} {info.get('model name', '?')} family {info.get('cpu family', '?')} "
            f"model {info.get('model', '?')}: {' '.join(flags)}")


def versions() -> dict[str, str]:
    import flax
    import jax
    import jaxlib
    import optax

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": np.__version__, "machine": platform.machine(),
            "cpu": cpu_fingerprint()}


def platform_entry(golden: dict) -> dict | None:
    """The golden hashes recorded on this platform (same versions and CPU), or None."""
    now = versions()
    return next((p for p in golden["platforms"] if p["versions"] == now), None)


def synthetic_npz(path: Path, shape: tuple[int, ...], kind: str, seed: int = 0) -> Path:
    """Smooth random blobs (not noise, so the models have something to learn), uint8, 1200/200/200 examples."""
    rng = np.random.default_rng(seed)
    n = 1600
    h, w = shape[0], shape[1]
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.2, 0.8, (2, n, 1, 1)) * np.array([h, w])[:, None, None, None]
    r = rng.uniform(2.0, min(h, w) / 3, (n, 1, 1))
    img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))  # [n, h, w]
    if len(shape) == 3:
        img = np.stack([img * rng.uniform(0.3, 1.0, (n, 1, 1)) for _ in range(shape[2])], axis=-1)
    x = (img > 0.5).astype(np.uint8) if kind == "binary" else np.round(255 * img).astype(np.uint8)
    np.savez(path, train=x[:1200], valid=x[1200:1400], test=x[1400:])
    return path


def run_preset(preset: str, workdir: Path, data_name: str | None = None, data_dir: str | None = None) -> str:
    import jaxvae as jv

    overrides = [f"train.steps={STEPS}", *EVAL]
    if data_name is not None:
        overrides.append(f"data.name={data_name}")
    if data_dir is not None:
        overrides.append(f"data.dir={data_dir}")
    cfg = jv.config.apply_overrides(jv.config.get_preset(preset), overrides)
    summary = jv.fit(cfg, workdir, progress=False, log=lambda _: None)
    return summary["params_sha256"]


def synthetic_hash(preset: str, tmp: Path) -> str:
    spec = SYNTHETIC[preset]
    if spec is None:
        return run_preset(preset, tmp / preset)
    data = synthetic_npz(tmp / f"{preset}.npz", *spec)
    return run_preset(preset, tmp / preset, data_name=str(data))


def real_hash(preset: str, tmp: Path) -> str:
    return run_preset(preset, tmp / f"{preset}-real", data_dir=str(SHARED / REAL[preset]))


def shipped_env() -> dict[str, str]:
    """This process's environment with XLA's default optimization level: tests/conftest.py compiles the suite at
    ``--xla_backend_optimization_level=0``, and the golden hashes are properties of what users run."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_backend_optimization_level")]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def shipped_hash(kind: str, preset: str, tmp: Path) -> str:
    """``synthetic_hash`` or ``real_hash`` of one preset, computed in a subprocess at the shipped optimization
    level (:func:`shipped_env`)."""
    command = [sys.executable, "-m", "tests.golden.presets", "--hash", kind, preset, "--tmp", str(tmp)]
    done = subprocess.run(command, capture_output=True, text=True, env=shipped_env(),
                          cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} run of {preset} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the golden file (else print)")
    parser.add_argument("--real", action="store_true", help="also the real-data runs from ../shared/data")
    parser.add_argument("--only", nargs="*", help="presets to run")
    parser.add_argument("--recorded-from", default="", help="the commit the hashes come from (for a new platform)")
    parser.add_argument("--hash", nargs=2, metavar=("KIND", "PRESET"),
                        help="print only the hash of one run (KIND: synthetic or real), for shipped_hash")
    parser.add_argument("--tmp", help="with --hash: the folder for the run (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.hash:
        kind, preset = args.hash
        run = {"synthetic": synthetic_hash, "real": real_hash}[kind]
        with tempfile.TemporaryDirectory() as tmp:
            print(run(preset, Path(args.tmp or tmp)))
        return 0
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"steps": STEPS, "platforms": []}
    out = platform_entry(golden)
    if out is None:
        out = {"versions": versions(), "recorded_from": args.recorded_from, "synthetic": {}, "real": {}}
        golden["platforms"].append(out)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.only or SYNTHETIC:
            out["synthetic"][preset] = synthetic_hash(preset, Path(tmp))
            print(f"synthetic {preset}: {out['synthetic'][preset]}", flush=True)
            if args.real and preset in REAL:
                out["real"][preset] = real_hash(preset, Path(tmp))
                print(f"real {preset}: {out['real'][preset]}", flush=True)
    if args.write:
        GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
