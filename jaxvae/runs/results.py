"""The end of a run: the test-split evaluation, the image grids and the console summary.

:class:`TestEvaluation` compiles the evaluators once; ``jaxvae train`` calls it for its one model, a sweep for each
of its models, so a sweep member's ``summary.json`` has exactly the fields (and values) of a separate run's.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxvae import data as data_lib
from jaxvae import sharding
from jaxvae.config import Config, data_seed
from jaxvae.data import text
from jaxvae.data.batches import num_examples, take
from jaxvae.distributions.likelihoods import bits_per_dim
from jaxvae.evaluation import diagnostics, samplers
from jaxvae.evaluation import likelihood as evaluate
from jaxvae.models import conditional
from jaxvae.models.protocol import Params, PureModel
from jaxvae.rundir import report
from jaxvae.rundir.writers import atomic_write_text


class TestEvaluation:
    """The final evaluation on the test split: the ELBO terms, the IWAE log-likelihood (``eval.num_samples``
    samples on at most ``eval.max_examples`` examples), bits/dim and the latent summary.

    The IWAE estimate is sharded over the mesh's ``data`` axis when the mesh has several devices (its batch
    rounded up to a multiple of the axis size). Build it once per architecture; call it per model.
    """

    def __init__(self, model: PureModel, cfg: Config, dataset: data_lib.Dataset, *,
                 mesh: jax.sharding.Mesh | None = None):
        self.model, self.cfg, self.dataset = model, cfg, dataset
        e = cfg.eval
        self.elbo = evaluate.make_elbo_evaluator(model, batch_size=e.batch_size)
        test = dataset.test
        pick = data_lib.random_subset(num_examples(test), e.max_examples or None, data_seed(cfg))
        self.nll_data = take(test, pick)
        self.sharded = mesh is not None and mesh.devices.size > 1
        batch = e.batch_size
        if self.sharded:
            n_data = sharding.data_axis_size(mesh)
            batch = -(-batch // n_data) * n_data
        self.iwae = evaluate.make_iwae_evaluator(model, num_samples=e.num_samples, batch_size=batch,
                                                 mesh=mesh if self.sharded else None)

    def __call__(self, params: Params, key: jax.Array, *, sharded_params: Params | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """The test metrics of ``params`` (host copies); ``sharded_params``: the same parameters in their mesh
        shardings, for the sharded IWAE estimate (default: ``params``). ``log``: a line at the start of each
        phase, with the settings that size it."""
        say = log or (lambda _: None)
        test = self.dataset.test
        e = self.cfg.eval
        with phase(say, f"Final evaluation: the ELBO on the {num_examples(test):,} test examples"):
            terms = self.elbo(params, test, jax.random.fold_in(key, 0))
        t0 = time.perf_counter()
        with phase(say, f"Final evaluation: the IWAE log-likelihood with k={e.num_samples:,} importance samples "
                        f"on {num_examples(self.nll_data):,} test examples (eval.num_samples, eval.max_examples; "
                        "fewer for a quick estimate, e.g. --set eval.num_samples=100)"):
            nll = self.iwae(sharded_params if self.sharded and sharded_params is not None else params,
                            self.nll_data, jax.random.fold_in(key, 1))
        nll_seconds = time.perf_counter() - t0
        with phase(say, "Final evaluation: active units and mutual information on the test split"):
            latent = diagnostics.latent_summary(self.model, params, test, jax.random.fold_in(key, 2),
                                                active_threshold=self.cfg.monitor.active_threshold)
        out = {
            "test_elbo": terms["elbo"],
            "test_recon": terms["recon"],
            "test_kl": terms["kl"],
            "test_nll_iwae": -nll.mean,
            "test_nll_iwae_stderr": nll.standard_error,
            "nll_num_samples": nll.num_samples,
            "nll_num_examples": num_examples(self.nll_data),
            "nll_seconds": nll_seconds,
            "test_bits_per_dim": bits_per_dim(-nll.mean, text.mean_length(self.nll_data) if self.dataset.vocabulary
                                              else math.prod(self.dataset.event_shape)),
            "kl_per_dim": terms.get("kl_per_dim"),
            "active_units": latent["active_units"],
            "mutual_information": latent["mutual_information"],
        }
        if "kl_groups" in terms:
            out["kl_groups"] = terms["kl_groups"]
        labels = self.dataset.labels or {}
        if self.cfg.model.conditional == "m2" and labels.get("test") is not None:
            out["test_error"] = conditional.classification_error(self.model, params, data_lib.images(test),
                                                                 labels["test"])
        out["latent"] = latent
        return out


def final_key(cfg: Config) -> jax.Array:
    """The key of the final evaluation and the image grids of a run."""
    return jax.random.key(cfg.train.seed + 2)


@contextlib.contextmanager
def phase(log: Callable[[str], None], text: str) -> Iterator[None]:
    """Logs ``text`` before a phase of the work after training, and its duration after it when it took long."""
    log(f"{text} ...")
    t0 = time.perf_counter()
    yield
    seconds = time.perf_counter() - t0
    if seconds >= 10:
        log(f"  ... took {seconds:.0f} s")


def write_images(workdir: Path, cfg: Config, dataset: data_lib.Dataset, model: PureModel, params: Params,
                 key: jax.Array, *, log: Callable[[str], None] | None = None) -> None:
    """``reconstructions.png`` (originals above their reconstructions) and ``samples.png`` (decoded prior
    samples) in ``workdir`` for image data; ``reconstructions.txt`` (``original -> reconstruction``) and
    ``samples.txt`` for token data (decoded texts)."""
    scale = report.value_scale(cfg.data.scale)
    n = max(8, cfg.eval.num_images - cfg.eval.num_images % 8)
    classes = conditional.grid_classes(cfg)
    ncols = classes or 8  # a conditional model's samples: one column per class (its classes cycle along z)
    n_samples = classes * max(1, n // classes) if classes else n
    # A fixed random subset: some test splits are sorted by class (binarized MNIST).
    pick = data_lib.random_subset(num_examples(dataset.test), n // 2, data_seed(cfg))
    originals = take(dataset.test, pick)
    say = log or (lambda _: None)
    sequential = (" (the autoregressive decoder draws them one position at a time)"
                  if cfg.model.decoder != "factorized" else "")
    with phase(say, f"Images: {n // 2} test examples reconstructed and {n_samples} prior samples decoded"
                    f"{sequential} (eval.num_images)"):
        recon = np.asarray(jax.jit(model.reconstruct)(params, originals))
        z = jax.jit(model.prior_sample, static_argnums=2)(params, jax.random.fold_in(key, 3), n_samples)
        samples = np.asarray(jax.jit(model.decode_mean)(params, z))
    if dataset.vocabulary:
        decoded = [text.decode(a, dataset.vocabulary) for a in (originals, recon, samples)]
        atomic_write_text(workdir / "reconstructions.txt",
                          "".join(f"{o} -> {r}\n" for o, r in zip(decoded[0], decoded[1], strict=True)))
        atomic_write_text(workdir / "samples.txt", "".join(f"{t}\n" for t in decoded[2]))
        lines = [f"{decoded[0][2 * i]} : " + " -> ".join(text.decode(np.asarray(samplers.interpolate(
                     model, params, a, b, 8)), dataset.vocabulary)) + f" : {decoded[0][2 * i + 1]}"
                 for i, (a, b) in enumerate(zip(originals[0::2], originals[1::2]))]
        atomic_write_text(workdir / "interpolations.txt", "".join(f"{t}\n" for t in lines[:8]))
        return
    orig_img, recon_img, sample_img = (report.to_images(a, dataset.event_shape, scale=scale)
                                       for a in (data_lib.images(originals), recon, samples))
    if orig_img is None:
        return  # not image data
    report.save_png(workdir / "reconstructions.png", report.reconstruction_grid(
        orig_img, recon_img, title=f"{dataset.name} test examples and their reconstructions (posterior mean)"))
    report.save_png(workdir / "samples.png", report.annotate_grid(
        report.image_grid(sample_img, ncols=ncols),
        title=f"{n_samples} samples from the prior (T=1), decoded to the mean"
              + ("; column c: class c" if classes else "")))


def _mi_text(summary: dict[str, Any]) -> str:
    latent = summary.get("latent", {})
    cap = latent.get("mutual_information_upper_bound")
    text = f"{summary['mutual_information']:.3f} nats"
    if cap is not None:  # the minibatch estimator cannot exceed log N
        text += f" (estimate capped at log N = {cap:.2f}, N = {round(math.exp(cap)):,} examples)"
    return text


def latent_notes(summary: dict[str, Any]) -> list[str]:
    """Plain-language notes on the latent space of a summary: inactive units."""
    latent = summary.get("latent", {})
    dims = len(latent.get("posterior_mean_variance", []))
    active = summary.get("active_units")
    if not dims or active is None or active >= dims:
        return []
    threshold = latent.get("active_threshold", 0.01)
    inactive = [d for d, v in enumerate(latent["posterior_mean_variance"]) if v <= threshold]
    shown = ", ".join(map(str, inactive[:12])) + (", ..." if len(inactive) > 12 else "")
    per_group = latent.get("active_units_per_group")
    layers = ""
    if per_group:  # a hierarchy: active units per layer, bottom first (the IWAE paper's "16+5")
        layers = " Active per layer: " + ", ".join(f"{g} {n}" for g, n in per_group.items()) + "."
    return [f"Note: {dims - active} of {dims} latent units are inactive (dimensions {shown}: their posterior mean "
            f"varies less than {threshold:g} over the test set, so the decoder ignores them).{layers} This is the "
            "usual outcome when the latent space is larger than what the data needs; see `jaxvae diagnose` for "
            "the per-unit KL, and docs/latent_health.md on posterior collapse if you expected them to be used."]


def format_summary(summary: dict[str, Any], workdir: Path) -> str:
    rows = [
        ("run directory", str(workdir)),
        ("steps", f"{summary['steps']:,} ({summary['epochs']} epochs)"),
        ("test ELBO", f"{summary['test_elbo']:.3f} nats"),
        ("  reconstruction", f"{summary['test_recon']:.3f} nats"),
        ("  KL", f"{summary['test_kl']:.3f} nats"),
        (f"test NLL (IWAE, k={summary['nll_num_samples']})",
         f"{summary['test_nll_iwae']:.3f} ± {summary['test_nll_iwae_stderr']:.3f} nats "
         f"on {summary['nll_num_examples']:,} examples"),
        ("active units", f"{summary['active_units']} of {len(summary['latent']['posterior_mean_variance'])}"),
        ("mutual information", _mi_text(summary)),
        ("train time", f"{summary['train_seconds']:.1f} s"),
        ("throughput", f"{summary['examples_per_sec']:,.0f} examples/s" if summary["examples_per_sec"] else "n/a"),
    ]
    if "test_error" in summary:  # M2 (model.conditional=m2): the classifier q(y|x) on the test split
        rows.insert(6, ("test classification error", f"{100 * summary['test_error']:.2f}% (q(y|x), M2)"))
    es = summary.get("early_stopping")
    if es and es["best_step"] is not None:
        stopped = es["stopped_at_step"]
        stop = "ran to the end" if stopped is None else f"stopped at step {stopped:,}"
        rows.insert(2, ("early stopping", f"evaluated step {es['best_step']:,} (best validation ELBO "
                                          f"{es['best_valid_elbo']:.3f}); {stop}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines + latent_notes(summary))
