"""Does a conditional VAE draw what it is asked for? A CVAE (`model.conditional=cvae`) trained on MNIST samples
each label from the prior (what `jaxvae sample --label c` draws); a separate MNIST classifier (the one
`jaxvae.evaluation.frechet` trains and caches) labels the samples. Reports, per requested label and overall, the
share of samples the classifier assigns to that label, and the Fréchet distance proxy of the samples to the test
images, beside the same network trained unconditionally."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import common


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks conditional_samples", description=__doc__)
    p.add_argument("--data-dir", default=str(common.SHARED_DATA / "mnist"), help="the MNIST folder")
    p.add_argument("--epochs", type=int, default=15, help="training epochs of each model (default 15)")
    p.add_argument("--per-label", type=int, default=1000, help="samples per label")
    p.add_argument("--classifier-epochs", type=int, default=5,
                   help="epochs of the MNIST feature classifier behind the FD proxy (default 5, as in every "
                        "recorded run; cached per setting); fewer only for a quick check")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    args = p.parse_args(argv)
    _, clf, acc, test_feat = common.mnist_classifier(args.data_dir, args.classifier_epochs)
    import jax

    from jaxvae import runs
    from jaxvae.evaluation import frechet, samplers
    from jaxvae.models import conditional

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("none", "cvae"):
            work = Path(tmp) / kind
            cmd = [sys.executable, "-m", "jaxvae", "train", "--workdir", str(work), "--no-progress",
                   *[a for s in ("data.name=mnist", f"data.dir={args.data_dir}", f"model.conditional={kind}",
                                 f"train.epochs={args.epochs}", "eval.num_samples=100", "eval.max_examples=1000",
                                 "monitor.every=0") for a in ("--set", s)]]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-3000:])
            summary = json.loads((work / "summary.json").read_text())
            run = runs.load_run(work)
            decode = jax.jit(run.model.decode_mean)
            z = samplers.prior_samples(run.model, run.params, jax.random.key(0), args.per_label)
            if kind == "cvae":
                x = np.stack([np.asarray(decode(run.params, conditional.latents_with_label(z, c)))
                              for c in range(10)])  # [10, n, *E]
                pred = frechet.predict(clf, x.reshape(-1, *x.shape[2:])).reshape(10, -1)
                per_label = (pred == np.arange(10)[:, None]).mean(axis=1)
                samples = x.reshape(-1, *x.shape[2:])
            else:
                samples = np.asarray(decode(run.params, samplers.prior_samples(
                    run.model, run.params, jax.random.key(0), 10 * args.per_label)))
                per_label = None
            fd = frechet.frechet_distance(frechet.dataset_features(clf, samples), test_feat)
            rows[kind] = (summary, per_label, fd)
            print(kind, summary["test_nll_iwae"], fd, None if per_label is None else per_label.round(3),
                  flush=True)
    summary, per_label, fd = rows["cvae"]
    header = ["model", "test NLL (IWAE)", "FD proxy of 10,000 prior samples",
              "samples classified as the requested label", *[f"label {c}" for c in range(10)]]
    vae = ["VAE (unconditional)", f"{rows['none'][0]['test_nll_iwae']:.2f} (-log p(x))", f"{rows['none'][2]:.2f}",
           *[""] * 11]
    cvae = ["CVAE", f"{summary['test_nll_iwae']:.2f} (-log p(x\\|y))", f"{fd:.2f}",
            f"{100 * per_label.mean():.1f}%", *[f"{100 * v:.1f}%" for v in per_label]]
    table = "\n".join("| " + " | ".join(r) + " |" for r in (header, ["---"] * len(header), vae, cvae))
    print(table)
    if not args.no_record:
        common.record_results(
            "conditional_samples", "Conditional VAE on MNIST: samples of the requested label (classifier check)",
            common.command_line(), table,
            f"The `mnist` preset's network (MLP 784-500-20, Bernoulli on grey levels, Adam 1e-3, batch 128), "
            f"{args.epochs} epochs, with and without `model.conditional=cvae`. {args.per_label} prior samples per "
            f"label (the CVAE) or {10 * args.per_label} (the VAE), decoded to Bernoulli means and labelled by "
            f"jaxvae's MNIST MLP classifier (test accuracy {acc:.4f}); FD: the Fréchet distance to the 10,000 "
            "test images in that classifier's features (a proxy, not the Inception FID). The NLLs differ in "
            "kind: the CVAE's is -log p(x|y), the VAE's -log p(x); IWAE k=100 on 1,000 test images.")


if __name__ == "__main__":
    main()
