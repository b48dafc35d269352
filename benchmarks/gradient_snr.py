"""Gradient signal-to-noise ratio of the inference and generative networks under IWAE, DReG and PIWAE as the number
of importance samples k grows (Rainforth et al. 2018, "Tighter variational bounds are not necessarily better",
Figure 1; Tucker et al. 2019 for DReG).

A VAE is trained briefly (``--train-steps``) in the binarized-mnist preset's setting, then, at those fixed
parameters and for one fixed minibatch, each estimator's gradient is drawn with ``--draws`` independent keys. Per
parameter, SNR = |mean| / standard deviation over the draws; the table gives the median over the encoder's
(inference network) and over the decoder's (generative network) parameters. PIWAE uses M = k/4 groups of K = 4
(k = 1: M = K = 1). Expected: IWAE's encoder SNR falls as k grows (O(1/sqrt(k))), DReG's does not; every
decoder SNR grows. Writes ``gradient_snr.png`` beside RESULTS.md (``--plot`` elsewhere; a ``--no-record`` run
writes it to the temporary folder).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import common

ESTIMATORS = ("iwae", "iwae_dreg", "piwae")


def _snr(grads: np.ndarray) -> float:
    """Median over parameters of |mean| / std over draws, ``grads [N, P]``."""
    mean, std = np.abs(grads.mean(0)), grads.std(0, ddof=1)
    keep = std > 0
    return float(np.median(mean[keep] / std[keep]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks gradient_snr", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", default="1,4,16,64,256", help="comma-separated numbers of importance samples k")
    p.add_argument("--draws", type=int, default=200, help="gradient draws per estimator and k")
    p.add_argument("--batch", type=int, default=16, help="examples in the fixed minibatch")
    p.add_argument("--train-steps", type=int, default=2000, help="steps of ordinary training before measuring")
    p.add_argument("--data-dir", default=str(common.SHARED_DATA / "binarized_mnist"),
                   help="statically binarized MNIST (falls back to the embedded digits when absent)")
    p.add_argument("--plot", default=None,
                   help="where to write the plot (default: benchmarks/gradient_snr.png; with --no-record, the "
                        "temporary folder)")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    args = p.parse_args(argv)
    import jax
    import jax.numpy as jnp

    import jaxvae as jv
    from jaxvae import objectives
    from jaxvae.objectives import estimators

    ks = [int(k) for k in args.ks.split(",")]
    real = Path(args.data_dir).is_dir()
    preset = "binarized-mnist" if real else "digits"
    sets = [f"train.steps={args.train_steps}", "eval.num_samples=10", "eval.max_examples=100", "monitor.every=0"]
    if real:
        sets.append(f"data.dir={args.data_dir}")
    cfg = jv.config.apply_overrides(jv.config.get_preset(preset), sets)
    with tempfile.TemporaryDirectory() as tmp:
        jv.fit(cfg, Path(tmp) / "run", progress=False, log=lambda _: None)
        run = jv.load_run(Path(tmp) / "run")
    model, params = run.model, run.params
    x = jnp.asarray(run.dataset.test[:args.batch])

    def loss_fn(name: str, k: int):
        if name == "iwae":
            return lambda p, key: objectives.iwae(model, p, x, key, num_samples=k)[0]
        if name == "iwae_dreg":
            return lambda p, key: estimators.iwae_dreg(model, p, x, key, num_samples=k)[0]
        inner = min(k, 4)
        return lambda p, key: estimators.piwae(model, p, x, key, num_samples=inner, outer=k // inner)[0]

    def flat(tree) -> jax.Array:
        return jnp.concatenate([v.reshape(v.shape[0], -1) for v in jax.tree.leaves(tree)], axis=1)

    keys = jax.random.split(jax.random.key(0), args.draws)
    table: dict[tuple[str, int], tuple[float, float]] = {}
    for k in ks:
        for name in ESTIMATORS:
            grad = jax.grad(loss_fn(name, k))
            # lax.map over the draws: one compiled gradient, memory of one draw at a time.
            g = jax.jit(lambda ks_, grad=grad: jax.lax.map(lambda kk: grad(params, kk), ks_))(keys)
            enc, dec = np.asarray(flat(g["encoder"])), np.asarray(flat(g["decoder"]))
            table[(name, k)] = (_snr(enc), _snr(dec))
            print(f"k={k:4d} {name:10s} SNR encoder {table[(name, k)][0]:.3f}  decoder {table[(name, k)][1]:.3f}",
                  flush=True)
    rows = ["| k | " + " | ".join(f"{n} encoder | {n} decoder" for n in ESTIMATORS) + " |",
            "|---|" + "---|" * (2 * len(ESTIMATORS))]
    for k in ks:
        cells = " | ".join(f"{table[(n, k)][0]:.3f} | {table[(n, k)][1]:.3f}" for n in ESTIMATORS)
        rows.append(f"| {k} | {cells} |")
    text = "\n".join(rows)
    print(text)
    png = common.output_path(args.plot, "gradient_snr.png", record=not args.no_record)
    _plot(table, ks, png)
    print(f"Wrote {png}")
    if not args.no_record:
        common.record_results(
            "gradient_snr", "Gradient SNR of the inference and generative networks: IWAE vs DReG vs PIWAE",
            common.command_line(),
            text + f"\n\n![gradient SNR]({os.path.relpath(png, common.HERE)})",
            f"{preset} preset after {args.train_steps} training steps (ELBO, Adam 1e-3); one fixed minibatch of "
            f"{args.batch} test images; {args.draws} gradient draws per cell; SNR = median over parameters of "
            "|mean| / std. PIWAE: M = k/4 groups of K = 4 for the encoder, IWAE over all k for the decoder.")


def _plot(table, ks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    labels = {"iwae": "IWAE", "iwae_dreg": "IWAE + DReG", "piwae": "PIWAE (K=4)"}
    panels = ((axes[0], 0, "inference network (encoder)"), (axes[1], 1, "generative network (decoder)"))
    for ax, idx, title in panels:
        for name in ESTIMATORS:
            ax.plot(ks, [table[(name, k)][idx] for k in ks], marker="o", label=labels[name])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("importance samples k")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("gradient SNR (median over parameters)")
    axes[0].legend()
    axes[1].text(0.03, 0.95, "the three lines coincide: DReG and PIWAE give\nthe decoder IWAE's gradient",
                 transform=axes[1].transAxes, va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
