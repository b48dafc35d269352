"""Latent diagnostics on constructed posteriors whose answers are known in closed form (no training): collapsed
dimensions, the MI of a linear-Gaussian encoder, exact aggregate moments, the streaming aggregate density,
planted outliers, prior holes and MMD, and the JSON report of a tiny model."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats
from scipy.special import logsumexp

from jaxvae.distributions import likelihoods
from jaxvae.evaluation import diagnostics
from jaxvae.models.posteriors import DiagonalGaussian
from jaxvae.models.protocol import VAE, split
from tests.helpers import fresh_python


def _gaussians(loc, scale):
    loc = np.asarray(loc, np.float32)
    return DiagonalGaussian(loc, np.broadcast_to(np.log(np.asarray(scale, np.float32)), loc.shape).copy())


def _scipy_aggregate(z, q, exclude=None):
    """Direct float64 log (1/|R|) sum_{n in R} N(z_m; mu_n, sigma_n^2) with R = all, or all but exclude[m]."""
    lp = stats.norm.logpdf(np.asarray(z, np.float64)[:, None, :], np.asarray(q.loc, np.float64)[None],
                           np.exp(np.asarray(q.log_scale, np.float64))[None]).sum(-1)  # [M, N]
    n = lp.shape[1]
    if exclude is None:
        return logsumexp(lp, axis=1) - math.log(n)
    lp[np.arange(lp.shape[0]), exclude] = -np.inf
    return logsumexp(lp, axis=1) - math.log(n - 1)


# ------------------------------------------------------------------------------------- collapsed dimensions


def test_ignored_dimensions_are_inactive_and_carry_no_kl():
    # An "encoder" that ignores dims {1, 3}: posterior N(0, 1) there for every x; informative elsewhere.
    n, d = 1000, 5
    rng = np.random.default_rng(0)
    loc = rng.normal(0.0, 1.0, (n, d))
    scale = np.full((n, d), 0.3)
    loc[:, [1, 3]] = 0.0
    scale[:, [1, 3]] = 1.0
    q = _gaussians(loc, scale)
    count, _ = diagnostics.active_units(q.loc)
    assert count == 3
    report_inactive = np.flatnonzero(diagnostics.active_units(q.loc)[1] <= 0.01)
    np.testing.assert_array_equal(report_inactive, [1, 3])
    kl = diagnostics.kl_per_dimension(q)
    assert kl.shape == (d,)
    assert np.all(kl[[1, 3]] < 1e-6)
    # KL(N(mu, 0.3^2) || N(0, 1)) averaged over mu ~ N(0, 1): 0.5 (1 + 0.09 - 1) - log 0.3 = 1.249.
    assert np.all(kl[[0, 2, 4]] > 0.5)
    np.testing.assert_allclose(kl[[0, 2, 4]], 0.5 * (np.var(loc, 0) + np.mean(loc, 0) ** 2)[[0, 2, 4]]
                               + 0.5 * (0.09 - 1) - math.log(0.3), rtol=1e-4)
    # Against a diagonal-Gaussian prior equal to the posterior on the ignored dims, the same holds.
    prior = DiagonalGaussian(np.zeros(d, np.float32), np.zeros(d, np.float32))
    np.testing.assert_allclose(diagnostics.kl_per_dimension(q, prior), kl, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------- mutual information


def test_mutual_information_of_a_linear_gaussian_encoder_matches_its_closed_form():
    # x ~ N(0, s_x^2 I), q(z|x) = N(a x, sigma^2 I): z ~ N(0, (a^2 s_x^2 + sigma^2) I), so
    # I(x; z) = h(z) - h(z|x) = (D/2) log(1 + a^2 s_x^2 / sigma^2). With a^2 s_x^2 / sigma^2 = e^2 - 1 this is
    # exactly 1 nat per dim, far below log N = 8.3 (the estimator's ceiling), so its bias is negligible: the own
    # component adds ~ e^2 / N = 0.2 % to q(z_n) and the MC error of the mean of log q(z_n) over N samples is
    # sqrt(D / 2 / N) = 0.016 nats. Tolerance 0.1 nats ~ 6 standard errors. (Seen: 1.99 to 2.01 over 4 seeds.)
    n, d, a, s_x = 4000, 2, 1.0, 1.0
    sigma = s_x * a / math.sqrt(math.e**2 - 1.0)
    exact = d / 2 * math.log(1.0 + a**2 * s_x**2 / sigma**2)
    assert exact == pytest.approx(2.0)
    x = np.random.default_rng(0).normal(0.0, s_x, (n, d))
    q = _gaussians(a * x, sigma)
    estimate = float(diagnostics.mutual_information(q, jax.random.key(0)))
    assert abs(estimate - exact) < 0.1
    # Streaming: the chunk size changes only float rounding.
    again = float(diagnostics.mutual_information(q, jax.random.key(0), chunk=333))
    assert again == pytest.approx(estimate, abs=1e-4)


# ------------------------------------------------------------------------------------- aggregate moments


def test_aggregate_moments_are_exact():
    rng = np.random.default_rng(1)
    n, d = 300, 4
    loc = rng.normal(0.5, 2.0, (n, d)) @ rng.normal(size=(d, d))
    scale = np.exp(rng.normal(-1.0, 0.4, (n, d)))
    q = _gaussians(loc, scale)
    mom = diagnostics.aggregate_posterior_moments(q)
    mu = np.asarray(q.loc, np.float64)
    var = np.exp(2.0 * np.asarray(q.log_scale, np.float64))
    cov = np.cov(mu, rowvar=False, bias=True) + np.diag(var.mean(0))
    np.testing.assert_allclose(mom["mean"], mu.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mom["covariance"], cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mom["variance"], np.diag(cov), rtol=1e-10)
    m = mu.mean(0)
    kl = 0.5 * (np.trace(cov) + m @ m - d - np.linalg.slogdet(cov)[1])
    assert mom["kl_moment_matched_to_standard_normal"] == pytest.approx(kl, rel=1e-10)
    # Against a diagonal prior N(b, diag c^2): the general closed form.
    b, c = np.full(d, 0.3), np.full(d, 1.7)
    prior = DiagonalGaussian(b.astype(np.float32), np.log(c).astype(np.float32))
    p_var = np.exp(2 * np.log(c.astype(np.float32).astype(np.float64)))
    p_loc = b.astype(np.float32).astype(np.float64)
    expected = 0.5 * (np.sum(np.diag(cov) / p_var) + np.sum((p_loc - m) ** 2 / p_var) - d
                      + np.sum(np.log(p_var)) - np.linalg.slogdet(cov)[1])
    got = diagnostics.aggregate_posterior_moments(q, prior)["kl_moment_matched_to_prior"]
    assert got == pytest.approx(expected, rel=1e-6)


def test_moment_matched_kl_is_zero_when_the_aggregate_has_the_priors_moments():
    # mu_n = +-0.6 e_d patterns with exact mean 0 and Cov(mu) = 0.36 I; sigma^2 = 0.64: Cov = I, mean 0.
    d = 3
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * d)).reshape(d, -1).T  # [8, 3], every sign pattern
    q = _gaussians(0.6 * signs, 0.8)
    mom = diagnostics.aggregate_posterior_moments(q)
    np.testing.assert_allclose(mom["mean"], 0.0, atol=1e-7)
    np.testing.assert_allclose(mom["covariance"], np.eye(d), atol=1e-6)
    assert abs(mom["kl_moment_matched_to_standard_normal"]) < 1e-6
    assert abs(mom["gaussian_total_correlation"]) < 1e-6


# ------------------------------------------------------------------------------------- aggregate density


def test_aggregate_log_density_matches_scipy_and_is_chunk_invariant():
    rng = np.random.default_rng(2)
    n, m, d = 50, 23, 3
    q = _gaussians(rng.normal(size=(n, d)), np.exp(rng.normal(-0.5, 0.3, (n, d))))
    z = rng.normal(0.0, 2.0, (m, d)).astype(np.float32)
    z[0] = 40.0  # far away: every component underflows in linear space, not in log space
    ref = _scipy_aggregate(z, q)
    small = np.asarray(diagnostics.aggregate_log_density(z, q, chunk=7))  # 50 = 7 * 7 + 1: padded and masked
    large = np.asarray(diagnostics.aggregate_log_density(z, q, chunk=1024))
    assert small.shape == (m,) and np.all(np.isfinite(small))
    np.testing.assert_allclose(small, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(small, large, rtol=1e-6, atol=1e-5)
    # Leave-one-out: z_m's own component m is dropped and the mixture renormalized over N - 1.
    exclude = np.arange(m)
    loo = np.asarray(diagnostics.aggregate_log_density(z, q, chunk=7, exclude=exclude))
    np.testing.assert_allclose(loo, _scipy_aggregate(z, q, exclude), rtol=1e-5, atol=1e-4)


# -------------------------------------------------------------------------------------------------- outliers


def test_planted_outliers_are_exactly_the_top_scores():
    rng = np.random.default_rng(3)
    n, d = 1000, 4
    loc = rng.normal(0.0, 1.0, (n, d))
    planted = np.array([17, 250, 501, 777, 990])
    # Five far points, each in its own place (8 along a different axis or sign), so that leave-one-out
    # cannot let them vouch for each other.
    for j, i in enumerate(planted):
        loc[i] = 0.0
        loc[i, j % d] = 8.0 if j < d else -8.0
    q = _gaussians(loc, 0.1)
    scores = diagnostics.outlier_scores(q, q, exclude_self=True)
    assert scores.shape == (n,)
    idx, top = diagnostics.top_k_outliers(scores, 5)
    assert set(idx.tolist()) == set(planted.tolist())
    assert np.all(np.diff(top) <= 0)  # most anomalous first
    # Scoring posterior samples instead of means finds them too.
    sampled = diagnostics.outlier_scores(q, q, jax.random.key(0), exclude_self=True)
    idx_s, _ = diagnostics.top_k_outliers(sampled, 5)
    assert set(idx_s.tolist()) == set(planted.tolist())
    # A held-out set against the reference: a far point scores high, a central one low.
    q_test = _gaussians(np.array([[0.0] * d, [0.0, 0.0, 9.0, -9.0]]), 0.1)
    s_test = np.asarray(diagnostics.outlier_scores(q_test, q, exclude_self=False))
    assert s_test[1] > s_test[0] + 100.0
    with pytest.raises(ValueError, match="exclude_self"):
        diagnostics.outlier_scores(q_test, q, exclude_self=True)


# ---------------------------------------------------------------------------------------------- holes, MMD


def _prior_like_and_cluster(n=1000, d=3):
    matched = _gaussians(np.zeros((n, d)), 1.0)  # every posterior N(0, I): the aggregate is exactly N(0, I)
    cluster = _gaussians(3.0 + 0.1 * np.random.default_rng(4).normal(size=(n, d)), 0.1)
    return matched, cluster


def test_prior_holes_vanish_for_a_matched_aggregate_and_dominate_for_a_narrow_cluster():
    matched, cluster = _prior_like_and_cluster()
    key = jax.random.key(0)
    # (num_samples = N throughout keeps one compiled shape.)
    holes = diagnostics.prior_holes(key, matched, num_samples=1000)
    # Same distribution on both sides: about percentile / 100 = 0.01 of prior samples fall below tau.
    assert holes["hole_fraction"] < 0.05
    assert holes["num_prior_samples"] == 1000 and holes["exclude_self"]
    assert set(holes["prior_log_density_quantiles"]) == {"p1", "p5", "p25", "p50", "p75", "p95", "p99"}
    narrow = diagnostics.prior_holes(key, cluster, num_samples=1000)
    assert narrow["hole_fraction"] > 0.5
    # The prior may be given as a DiagonalGaussian, a sampler, or ready-made samples.
    d = 3
    p = DiagonalGaussian(jnp.zeros(d), jnp.zeros(d))
    as_gauss = diagnostics.prior_holes(key, cluster, p, num_samples=1000)
    as_fn = diagnostics.prior_holes(key, cluster, lambda k, s: jax.random.normal(k, (s, d)), num_samples=1000)
    as_samples = diagnostics.prior_holes(key, cluster, np.random.default_rng(0).normal(size=(1000, d)))
    for h in (as_gauss, as_fn, as_samples):
        assert h["hole_fraction"] > 0.5 and h["num_prior_samples"] == 1000


def test_leave_one_out_is_what_makes_the_threshold_honest():
    # Sharp, spread-out posteriors: without leave-one-out each data latent sits on its own component and the
    # threshold is inflated, so even prior samples drawn from the same N(0, I) spread look like holes.
    # (Seen: hole fraction 0.016 leave-one-out, 0.89 with the own component.)
    n, d = 500, 2
    q = _gaussians(np.random.default_rng(5).normal(size=(n, d)), 0.01)
    key = jax.random.key(1)
    loo = diagnostics.prior_holes(key, q, num_samples=n)
    self_included = diagnostics.prior_holes(key, q, num_samples=n, exclude_self=False)
    assert self_included["threshold"] > loo["threshold"] + 100.0
    assert loo["hole_fraction"] < 0.05
    assert self_included["hole_fraction"] > 0.5


def test_aggregate_prior_mmd():
    matched, cluster = _prior_like_and_cluster()
    prior = jax.random.normal(jax.random.key(7), (1000, 3))
    same = diagnostics.aggregate_prior_mmd(jax.random.key(0), matched, prior, num_samples=1000)
    far = diagnostics.aggregate_prior_mmd(jax.random.key(0), cluster, prior, num_samples=1000)
    assert abs(same) < 0.01  # seen ~1e-4: the unbiased U-statistic is ~0 under the null
    assert far > 0.5


# ------------------------------------------------------------------------------------------------ the report


def test_latent_report_on_a_tiny_model_is_json_serializable():
    model, params = split(VAE.mlp((6,), 2, likelihoods.Bernoulli(), hidden=(4,), rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    train = (rng.random((60, 6)) < 0.5).astype(np.float32)
    test = (rng.random((25, 6)) < 0.5).astype(np.float32)
    report = diagnostics.latent_report(model, params, train, test, jax.random.key(0), max_examples=50, top_k=5,
                                       num_prior_samples=50, mmd_samples=50)
    text = json.dumps(report)
    assert json.loads(text)["num_train"] == 50
    for k in ("kl_per_dim", "kl_reference", "kl_total", "active_units", "inactive_dims", "posterior_mean_variance",
              "mutual_information", "mutual_information_upper_bound", "aggregate_posterior", "mmd_to_prior",
              "prior_holes", "outliers"):
        assert k in report, k
    assert report["kl_reference"] == "prior" and len(report["kl_per_dim"]) == 2
    agg = report["aggregate_posterior"]
    assert np.asarray(agg["covariance"]).shape == (2, 2) and len(agg["mean"]) == 2
    assert {"kl_moment_matched_to_standard_normal", "kl_moment_matched_to_prior", "variance"} <= set(agg)
    assert 0.0 <= report["prior_holes"]["hole_fraction"] <= 1.0
    assert report["mutual_information"] <= report["mutual_information_upper_bound"] + 0.1
    for split_name, size, n_total in (("train", 50, 60), ("test", 25, 25)):
        out = report["outliers"][split_name]
        assert out["num_examples"] == size
        assert len(out["indices"]) == 5 and all(0 <= i < n_total for i in out["indices"])
        assert out["scores"] == sorted(out["scores"], reverse=True)
    # The existing summary keeps its keys.
    summary = diagnostics.latent_summary(model, params, train, jax.random.key(1))
    assert {"active_units", "active_threshold", "posterior_mean_variance", "mutual_information",
            "mutual_information_upper_bound"} <= set(summary)


def test_plots_leave_matplotlibs_backend_and_pyplot_alone():
    """jaxvae draws with matplotlib's object-oriented API: a notebook's backend (and pyplot's figure registry) is
    the same after a report or a sweep's rate-distortion plot as before (no global matplotlib.use)."""
    code = ("import sys, tempfile, numpy as np, matplotlib\nmatplotlib.use('svg')\n"
            "from jaxvae.rundir import report\n"
            "png = report.kl_bar_chart([0.5, 0.0], [True, False])\n"
            "png += report.latent_scatter(np.random.default_rng(0).normal(size=(50, 3)))\n"
            "png += report.layer_chart({'z1': 1.0, 'z2': 0.1}, {'z1': 3, 'z2': 0}, {'z1': 4, 'z2': 2})\n"
            "report.plot_rate_distortion([{'label': 'a', 'test_kl': 1.0, 'test_recon': 20.0}],\n"
            "                            tempfile.mkdtemp() + '/rd.png')\n"
            "assert png.count(b'\\x89PNG') == 3\n"
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n")
    result = fresh_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["svg", "False"]


def test_annotated_grids_keep_every_pixel_and_add_their_labels():
    from jaxvae.rundir import report

    images = np.random.default_rng(0).uniform(size=(6, 8, 8, 1))
    grid = report.image_grid(images, ncols=3)
    out = report.annotate_grid(grid, title="six", row_labels=["first", "second"], col_labels=["a", "b", "c"])
    assert out.ndim == 3 and out.shape[2] == 3 and out.shape[0] > grid.shape[0] and out.shape[1] > grid.shape[1]
    top, left = out.shape[0] - grid.shape[0], out.shape[1] - grid.shape[1]
    np.testing.assert_array_equal(out[top:, left:, 0], grid[..., 0])  # the images, unchanged, below the labels
    assert (out[:top] < 128).any() and (out[top:, :left] < 128).any()  # dark text drawn in both margins
    np.testing.assert_array_equal(report.annotate_grid(grid), grid)  # nothing to add: the grid itself


def test_training_curves_need_training_records():
    from jaxvae.rundir import report

    assert report.training_curves([{"step": 10, "split": "valid", "elbo": -5.0}]) is None
    records = [{"step": s, "loss": 10.0 / s, "elbo": -10.0 / s, "kl": 1.0, "beta": 1.0, "kl_per_dim": [0.5, 0.5]}
               for s in (10, 20, 30)]
    records += [{"step": 30, "split": "monitor", "active_units": 2, "mi": 0.9}]
    png = report.training_curves(records)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
