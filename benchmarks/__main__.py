"""``python -m benchmarks NAME [options]``: user-runnable benchmarks; each run records its result in RESULTS.md."""

import sys

USAGE = """usage: python -m benchmarks NAME [options]

benchmarks:
  throughput         training examples/s of jaxvae (scan and host loops) vs plain JAX, PyTorch and pythae
  sweep_efficiency   an N-model `jaxvae sweep` vs N sequential `jaxvae train` runs
  strategies         beta / warm-up / cyclical / free bits / PI control on dynamically binarized MNIST
  monitor_cost       training time with the latent-health monitor on vs off
  sample_quality     prior vs ex-post GMM sampling for a VAE and an autoencoder (Fréchet distance proxy)
  conditional_samples  CVAE on MNIST: share of label-conditioned samples a classifier assigns to their label
  semi_supervised    M2 and M1+M2 (Kingma et al. 2014) test error with 100 labels vs the labels alone (MNIST)
  iwae_speed         IWAE NLL evaluation (k=5000) speed: jaxvae vs plain JAX/PyTorch vs pythae's get_nll
  hierarchy_throughput  two-layer MLP and top-down hierarchy training throughput vs PyTorch eager
  stabilizers        top-down hierarchy with every stabilizer vs one removed (KL balancing, skipping, ...)
  init_compare       model.init=flax vs torch vs pythae's VAE in the Flax example's setting (test -ELBO)
  collapse           posterior collapse with a PixelCNN (or, --task text, GRU) decoder: plain VAE vs remedies
  disentanglement    MIG / FactorVAE / DCI of VAE, beta-VAE, capacity, beta-TCVAE, PI control on dSprites-style
  gradient_snr       encoder/decoder gradient SNR vs k under IWAE, DReG and PIWAE (Rainforth et al. Fig. 1)
  sharding           train-step time on a 1-device vs an N-device mesh (simulated CPU devices or real ones)
  cli_startup        wall time of `jaxvae --help` / `presets` / `config show`, beside an earlier revision
  signal_latency     SIGTERM to acknowledgement and to exit 75 of a PixelCNN run, chunks bounded in time vs not
  reproduce          train + evaluate (k=5000) published VAE set-ups and compare with the papers' numbers

Each takes --help. PyTorch runs in benchmarks/.venv-torch (create it with `make bench-torch-env`)."""

# name -> the module whose main(argv) runs it
BENCHMARKS = {name: f"benchmarks.{name}" for name in (
    "throughput", "sweep_efficiency", "strategies", "monitor_cost", "sample_quality", "iwae_speed", "sharding",
    "hierarchy_throughput", "stabilizers", "init_compare", "gradient_snr", "collapse", "disentanglement",
    "cli_startup", "semi_supervised", "conditional_samples", "signal_latency")}
BENCHMARKS["reproduce"] = "benchmarks.reproduce.harness"


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    name, rest = sys.argv[1], sys.argv[2:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    import importlib

    importlib.import_module(BENCHMARKS[name]).main(rest)


if __name__ == "__main__":
    main()
