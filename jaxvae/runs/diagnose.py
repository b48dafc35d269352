"""``jaxvae diagnose``: the latent-health report of a trained run (``diagnostics.json`` + ``report.html``).

Host-side orchestration only: the numbers come from :func:`jaxvae.evaluation.diagnostics.latent_report`, the
samplers from
:mod:`jaxvae.evaluation.samplers`, the pictures from :mod:`jaxvae.rundir.report`.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.data import random_subset, text
from jaxvae.data.batches import num_examples, take
from jaxvae.evaluation import diagnostics, expost, samplers
from jaxvae.models import conditional
from jaxvae.models.posteriors import DiagonalGaussian
from jaxvae.rundir import report
from jaxvae.rundir.writers import atomic_write_json, read_json_object, read_metrics
from jaxvae.runs import run as runs
from jaxvae.runs.results import phase


def _images(ctx: runs.RunContext, x: np.ndarray) -> np.ndarray | None:
    return report.to_images(np.asarray(conditional.images(x)), ctx.dataset.event_shape,
                            scale=report.value_scale(ctx.cfg.data.scale))


def _grid_png(ctx: runs.RunContext, x: np.ndarray, ncols: int = 8) -> bytes | None:
    images = None if ctx.dataset.vocabulary else _images(ctx, x)
    return None if images is None else report.png_bytes(report.image_grid(images, ncols=ncols))


def _show(ctx: runs.RunContext, x: np.ndarray, caption: str = "", ncols: int = 8) -> str:
    """Examples as HTML: an image grid, the decoded texts of token data, or ``""`` for other data."""
    if ctx.dataset.vocabulary:
        return report.text_block(text.decode(np.asarray(x), ctx.dataset.vocabulary), ncols, caption)
    png = _grid_png(ctx, x, ncols)
    return report.img_tag(png, caption, width=640, pixels=True) if png else ""


def run_diagnose(workdir: str | Path, *, max_examples: int = 2000, gmm_components: int = 10,
                 gmm_covariance: str = "full", num_samples: int = 64, top_k: int = 16, seed: int = 0,
                 step: int | str | None = None, out_dir: str | Path | None = None, expost_steps: int = 1500,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Computes the latent report of the run in ``workdir`` and writes diagnostics.json and report.html.

    Args:
      step: the checkpoint (see :func:`jaxvae.runs.restore_run`; default: the model the run reports).
      expost_steps: training steps of the learned ex-post samplers compared in the report (a RealNVP flow and
        the two-stage VAE of :mod:`jaxvae.evaluation.expost`).
      out_dir: where the two files go (default: ``workdir``). Writing into the run directory holds its lock
        (:func:`jaxvae.rundir.run_lock`); a folder outside it does not, so a run can be diagnosed while it trains.
    """
    from jaxvae.rundir import lock as rundir

    workdir = Path(workdir)
    out = Path(out_dir) if out_dir is not None else workdir
    with rundir.lock_for_output(workdir, out) as inside:
        if not inside:
            out.mkdir(parents=True, exist_ok=True)
        return _diagnose(workdir, out, max_examples=max_examples, gmm_components=gmm_components,
                         gmm_covariance=gmm_covariance, num_samples=num_samples, top_k=top_k, seed=seed, step=step,
                         expost_steps=expost_steps, log=log)


def _diagnose(workdir: Path, out: Path, *, max_examples: int, gmm_components: int, gmm_covariance: str,
              num_samples: int, top_k: int, seed: int, step: int | str | None, expost_steps: int,
              log: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    ctx, params = runs.restore_run(workdir, step=step)
    model, ds = ctx.model, ctx.dataset
    key = jax.random.key(seed)
    with phase(log, f"Latent statistics on up to {max_examples:,} training and test examples (--max-examples)"):
        result = diagnostics.latent_report(model, params, ds.train, ds.test if num_examples(ds.test) else None,
                                           jax.random.fold_in(key, 0), max_examples=max_examples, top_k=top_k,
                                           active_threshold=ctx.cfg.monitor.active_threshold)

    # Ex-post density estimation (Ghosh et al. 2020): a GMM fitted to the training set's posterior means.
    fit_idx = random_subset(num_examples(ds.train), max_examples * 5, seed)
    q_train = diagnostics.encode_dataset(model, params, take(ds.train, fit_idx))
    k = min(gmm_components, len(fit_idx))
    with phase(log, f"Ex-post Gaussian mixture ({k} components) on {len(fit_idx):,} training codes"):
        fit = samplers.fit_gmm(jax.random.fold_in(key, 1), q_train.loc, k, covariance=gmm_covariance)
    result["gmm"] = {"num_components": k, "covariance": gmm_covariance, "num_fit_examples": len(fit_idx),
                     "mean_log_likelihood": float(fit.log_likelihood), "iterations": int(fit.num_iters),
                     "converged": bool(fit.converged)}
    z_prior = samplers.prior_samples(model, params, jax.random.fold_in(key, 2), num_samples)
    z_cold = samplers.prior_samples(model, params, jax.random.fold_in(key, 2), num_samples, temperature=0.7)
    z_gmm = samplers.gmm_sample(fit.gmm, jax.random.fold_in(key, 3), num_samples)
    # Learned ex-post densities on the same latents (jaxvae.evaluation.expost): a RealNVP flow and the two-stage
    # VAE.
    with phase(log, f"Ex-post RealNVP flow and two-stage VAE, {expost_steps:,} steps each"):
        flow = expost.fit_flow(jax.random.fold_in(key, 5), q_train.loc, steps=expost_steps)
        two_stage = expost.fit_two_stage(jax.random.fold_in(key, 6), q_train.loc, steps=expost_steps)
    z_ex = {"flow": expost.flow_sample(flow, jax.random.fold_in(key, 7), num_samples),
            "two_stage": expost.two_stage_sample(two_stage, jax.random.fold_in(key, 7), num_samples, noise=True)}
    result["expost"] = {"fit_steps": expost_steps, "flow_final_nll": float(flow.losses[-100:].mean()),
                        "two_stage_final_neg_elbo": float(two_stage.losses[-100:].mean()),
                        "two_stage_gamma": float(jnp.exp(two_stage.params["log_gamma"]))}
    decode = jax.jit(model.decode_mean)
    # How well each sampler covers the data: the share of its latents that fall into prior holes (density under
    # the aggregate posterior below the data's own 1st percentile).
    threshold = result["prior_holes"]["threshold"]
    q_ref = DiagonalGaussian(q_train.loc[:max_examples], q_train.log_scale[:max_examples])
    for name, z in (("prior", z_prior), ("prior_t0.7", z_cold), ("gmm", z_gmm), *z_ex.items()):
        dens = np.asarray(diagnostics.aggregate_log_density(z, q_ref))
        result.setdefault("sampler_hole_fraction", {})[name] = float(np.mean(dens < threshold))
    posterior = ctx.cfg.model.posterior
    if posterior != "diagonal":  # a flow: its Gaussian statistics are its base distribution's
        result["posterior"] = {
            "kind": posterior, "flow_steps": ctx.cfg.model.flow_steps,
            "note": "the posterior statistics of this report (active units, the KL per dimension and its total, "
                    "the aggregate posterior, holes, the ex-post mixture) are those of the flow's base Gaussian; "
                    "the model's KL and bounds in summary.json and eval.json include the flow"}
    result["kl_total_is"] = _kl_total_is(result, posterior, workdir)
    result["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "diagnostics.json", result)
    sequential = " (the autoregressive decoder draws them one position at a time)" \
        if ctx.cfg.model.decoder != "factorized" else ""
    with phase(log, f"Report: samples of each sampler, interpolations and traversals decoded{sequential}"):
        _write_report(ctx, params, result, workdir, out, decode, z_prior, z_cold, z_gmm, z_ex, q_train, fit_idx,
                      key)
    log(format_diagnostics(result, out))
    return result


def _kl_total_is(result: dict[str, Any], posterior: str, workdir: Path) -> str:
    """What ``kl_total`` measures, in words: which distributions, which data, and for a flow posterior how it
    relates to the model's KL in summary.json."""
    data = f"averaged over {result['num_train']:,} training examples"
    if posterior != "diagonal":
        path = workdir / "summary.json"
        saved = read_json_object(path, "the report leaves out the model's KL") if path.exists() else None
        model_kl = (f"; summary.json's test_kl, {saved['test_kl']:.3f} nats, is the model's KL with the flow, on "
                    "the test split") if saved and isinstance(saved.get("test_kl"), int | float) else ""
        return (f"the KL of the flow's base Gaussian q0(z|x) to N(0, I), {data}, not the KL of the {posterior} "
                f"posterior{model_kl}")
    if "kl_per_group" in result:
        return f"the model's KL, every latent group against its conditional prior, {data}"
    against = "the prior" if result["kl_reference"] == "prior" else "N(0, I) (a proxy: the prior is not Gaussian)"
    return f"the KL of q(z|x) to {against}, {data}"


def _dims(dims: list[int], limit: int = 40) -> str:
    """A list of dimension indices for the page, shortened after ``limit``."""
    if not dims:
        return "none"
    head = ", ".join(map(str, dims[:limit]))
    return head + (f", ... ({len(dims) - limit} more)" if len(dims) > limit else "")


# The disentanglement scores of eval.json as the report shows them, with what each measures.
_DISENTANGLEMENT_ROWS = (
    ("mig", "MIG", "mutual information gap: per factor, the gap between the two codes most informative about it "
                   "(normalised by the factor's entropy; Chen et al. 2018)"),
    ("factor_vae_score", "FactorVAE score", "accuracy of a majority-vote classifier that names the fixed factor "
                                            "from the least-varying code (Kim & Mnih 2018)"),
    ("beta_vae_score", "BetaVAE score", "accuracy of a linear classifier that names the fixed factor from mean "
                                        "code differences (Higgins et al. 2017)"),
    ("dci_disentanglement", "DCI disentanglement", "how few factors each code predicts, from gradient-boosted "
                                                   "trees' importances (Eastwood & Williams 2018)"),
    ("dci_completeness", "DCI completeness", "how few codes each factor is predicted from"),
    ("dci_informativeness_test", "DCI informativeness", "test accuracy of those trees, averaged over factors"),
    ("sap", "SAP", "per factor, the gap between the two codes that predict it best alone (Kumar et al. 2018)"),
    ("modularity", "modularity", "how much each code depends on one factor only (Ridgeway & Mozer 2018)"),
    ("explicitness_test", "explicitness", "ROC-AUC of a linear classifier from all codes, averaged over factors"),
)


def _disentanglement_section(workdir: Path, step: int) -> tuple[str, str] | None:
    """A table of the disentanglement scores ``jaxvae evaluate --metrics disentanglement`` wrote to eval.json for
    this step, or None when there are none."""
    path = workdir / "eval.json"
    saved = read_json_object(path, "the report leaves its scores out") if path.exists() else None
    if saved is None:
        return None
    scores = saved.get("disentanglement")
    if not scores or saved.get("step") != step:
        return None
    settings = saved.get("disentanglement_settings", {})
    points = f"{settings['num_train']:,} training and {settings['num_test']:,} test" if settings else "its"
    rows = [(name, f"{scores[key]:.3f}: {meaning}") for key, name, meaning in _DISENTANGLEMENT_ROWS
            if key in scores]
    caption = ("<p>From eval.json (<code>jaxvae evaluate --metrics disentanglement</code>): scores in [0, 1], "
               f"higher is more disentangled, on the posterior means with {points} points per metric.</p>")
    return "Disentanglement (ground-truth factors)", caption + report.html_table(rows)


def _write_report(ctx, params, result, workdir, out, decode, z_prior, z_cold, z_gmm, z_ex, q_train, fit_idx,
                  key):
    model, ds = ctx.model, ctx.dataset
    inactive = set(result["inactive_dims"])
    holes = result["prior_holes"]
    rows = [
        ("dataset / step", f"{ds.name} / {int(ctx.state.step):,}", "the checkpoint this report describes"),
        *([("posterior", f"{result['posterior']['kind']} flow, {result['posterior']['flow_steps']} steps",
            result["posterior"]["note"])] if "posterior" in result else []),
        ("active units",
         f"{result['active_units']} of {result['latent_dim']}; inactive: {_dims(sorted(inactive))}",
         f"a unit is active when its posterior mean varies over the data, Cov_x(E_q[z_d]) > "
         f"{result['active_threshold']:g} (Burda et al. 2016); an inactive unit carries no information about x"),
        ("total KL", f"{result['kl_total']:.3f} nats",
         f"the rate: {result['kl_total_is']}; near 0 means posterior collapse"),
        ("mutual information I(x; z)", f"{result['mutual_information']:.3f} nats",
         f"how much the code tells about the example (Hoffman & Johnson 2016); it cannot exceed the KL, and the "
         f"estimate cannot exceed log N = {result['mutual_information_upper_bound']:.2f}"),
        ("aggregate posterior vs the prior",
         f"KL {result['aggregate_posterior']['kl_moment_matched_to_standard_normal']:.3f} nats (moment-matched); "
         f"MMD² {result['mmd_to_prior']:.4f}",
         f"how far the codes of the data, taken together, are from N(0, I): the KL of a Gaussian with their mean "
         f"and covariance, and a kernel two-sample distance ({result['mmd_kernel']} kernel); large values mean "
         "prior samples land where the decoder saw no data"),
        ("prior holes", f"{100 * holes['hole_fraction']:.1f}% of prior samples",
         f"the share of samples from the prior that fall where the data's codes are sparse: their density under "
         f"the aggregate posterior is below that of the data's own {holes['percentile']:g}st percentile. Such "
         "samples decode to poor images"),
        ("latents in holes, per sampler", ", ".join(f"{k}: {100 * v:.1f}%"
                                                    for k, v in result["sampler_hole_fraction"].items()),
         "the same share for each sampler's latents: the prior at temperature 1 and 0.7, and the ex-post "
         "densities fitted to the training codes (a Gaussian mixture, a RealNVP flow, a two-stage VAE); a good "
         "sampler puts few latents in holes"),
    ]
    sections = [("Summary", report.html_table(rows, header=("", "value", "what it means")))]
    curves = report.training_curves(read_metrics(workdir))
    if curves:
        sections.append(("Training curves (metrics.jsonl)", report.img_tag(
            curves, "Per-dimension KL: each row a latent dimension, brighter = more information; a row that stays "
            "dark is an inactive unit.", width=1400)))
    dis = _disentanglement_section(workdir, int(ctx.state.step))
    if dis:
        sections.append(dis)
    if result.get("kl_per_group") and result.get("active_units_per_group") and len(result["kl_per_group"]) > 1:
        sizes = dict(ctx.model.groups)
        layer_rows = [(g, f"KL {kl:.3f} nats; {result['active_units_per_group'][g]} of {sizes[g]} units active")
                      for g, kl in result["kl_per_group"].items()]
        png = report.layer_chart(result["kl_per_group"], result["active_units_per_group"], sizes)
        sections.append(("Per layer (the model's own KL of each latent group)",
                         f'<div class="grid">{report.html_table(layer_rows)}{report.img_tag(png)}</div>'))
    title = ("KL per dimension of each posterior to N(0, I), a proxy for a hierarchy's conditional priors"
             if result.get("kl_per_group") else "KL per dimension")
    kl_png = report.kl_bar_chart(result["kl_per_dim"], [d not in inactive for d in range(result["latent_dim"])],
                                 title)
    labels = ds.labels.get("train")[fit_idx] if ds.labels and ds.labels.get("train") is not None else None
    outliers = np.asarray(result["outliers"]["train"]["indices"])
    pos = {int(i): j for j, i in enumerate(fit_idx)}
    out_in_fit = np.array([pos[int(i)] for i in outliers if int(i) in pos], dtype=int)
    scatter = report.latent_scatter(q_train.loc, labels, outliers=out_in_fit)
    sections.append(("KL per dimension and the latent space", '<div class="grid">' + report.img_tag(
        kl_png, "The data-averaged KL of each latent dimension; grey bars are inactive units.") + report.img_tag(
        scatter, "Posterior means projected on their two principal axes, with the prior's 1-2-3 standard-"
        "deviation circles (exact contours of N(0, I) in this plane); red rings mark latent outliers.")
        + "</div>"))
    classes = conditional.grid_classes(ctx.cfg)
    per_class = "; column c: class c" if classes else ""  # a conditional model's classes cycle along z
    keep = (len(z_prior) // classes) * classes if classes else len(z_prior)  # whole rows of classes
    samples = [_show(ctx, decode(params, z[:keep]), cap + per_class, ncols=classes or 8) for z, cap in (
        (z_prior, "prior, T=1"), (z_cold, "prior, T=0.7"),
        (z_gmm, f"ex-post GMM ({result['gmm']['num_components']} components)"),
        (z_ex["flow"], "ex-post RealNVP flow"), (z_ex["two_stage"], "two-stage VAE (Dai & Wipf 2019)"))]
    if any(samples):
        sections.append(("Samples: the prior vs ex-post densities fitted to the training codes",
                         f'<div class="grid">{"".join(samples)}</div>'))
    rng = np.random.default_rng(0)
    test = ds.test if num_examples(ds.test) >= 2 else ds.train
    pairs = rng.choice(num_examples(test), size=(4, 2), replace=False)
    interp = np.concatenate([np.asarray(samplers.interpolate(model, params, take(test, a), take(test, b), 8))
                             for a, b in pairs])
    shown = _show(ctx, interp, "Each row: from one test example's posterior mean (left) to another's (right).")
    if shown:
        sections.append(("Interpolations (spherical, between posterior means of test examples)", shown))
    active_dims = [d for d in range(result["latent_dim"]) if d not in inactive][:10] or [0]
    trav = np.asarray(samplers.traversals(model, params, take(test, int(pairs[0, 0])), dims=active_dims, num=9))
    shown = _traversal_figure(ctx, trav, active_dims, result["kl_per_dim"])
    if shown:
        sections.append((f"Traversals of the active dimensions {active_dims}", shown))
    for split, data in (("train", ds.train), ("test", ds.test)):
        o = result["outliers"].get(split)
        if not o or not o["indices"]:
            continue
        shown = _show(ctx, data[np.asarray(o["indices"])])
        scores = ", ".join(f"{s:.1f}" for s in o["scores"][:8])
        if shown:
            sections.append((f"Most anomalous {split} examples (latent outlier scores {scores}, ...; median "
                             f"{o['median_score']:.1f})", shown))
    report.write_html(out / "report.html", f"jaxvae latent health: {html.escape(str(workdir))}", sections)


def _traversal_figure(ctx: runs.RunContext, trav: np.ndarray, dims: list[int], kl_per_dim: list[float]) -> str:
    """Traversals ``[len(dims), num, *E]`` as HTML: image rows labelled with their dimension and its KL, columns
    with the offset from the posterior mean; decoded texts for token data."""
    num = trav.shape[1]
    offsets = np.linspace(-3.0, 3.0, num)
    caption = ("One test example's posterior mean with the dimension of each row set to the prior mean plus the "
               "number of prior standard deviations above its column, the other dimensions unchanged; the KL "
               "beside each row is that dimension's data-averaged KL.")
    if ctx.dataset.vocabulary:
        return _show(ctx, trav.reshape(-1, *trav.shape[2:]), caption, ncols=num)
    images = _images(ctx, trav.reshape(-1, *trav.shape[2:]))
    if images is None:
        return ""
    grid = report.annotate_grid(  # tiles of at least 56 px, shown at their own size: sharp labels
        report.image_grid(images, ncols=num, min_tile=56),
        row_labels=[f"z{d} (KL {kl_per_dim[d]:.2f})" for d in dims], col_labels=[f"{o:+g} sd" for o in offsets],
        font_size=13)
    return report.img_tag(report.png_bytes(grid), caption, width=grid.shape[1])


def format_diagnostics(result: dict[str, Any], workdir: Path) -> str:
    holes = result["prior_holes"]["hole_fraction"]
    lines = [
        f"  active units          {result['active_units']} of {result['latent_dim']}"
        + (f" (inactive: {result['inactive_dims']})" if result["inactive_dims"] else ""),
        f"  total KL              {result['kl_total']:.3f} nats ({result['kl_total_is']})",
        f"  mutual information    {result['mutual_information']:.3f} nats",
        f"  MMD² to the prior     {result['mmd_to_prior']:.4f}",
        f"  prior holes           {100 * holes:.1f}% of prior samples",
        "  latents in holes      " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in
                                              result["sampler_hole_fraction"].items()),
        f"Wrote {workdir / 'diagnostics.json'} and {workdir / 'report.html'} ({result['seconds']:.1f} s)",
    ]
    if not math.isfinite(result["mutual_information"]):
        lines.insert(0, "  (non-finite statistics: the run's parameters may be damaged)")
    return "\n".join(lines)
