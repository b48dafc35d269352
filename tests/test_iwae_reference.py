"""`jaxvae evaluate` against a slow, independent reference: a plain per-example loop in float64 numpy.

The reference shares nothing with jaxvae's code path but the trained parameters: its own MLP forward pass, its own
Bernoulli log-density, its own random numbers, one example and one importance sample block at a time.
"""

import json
import math

import numpy as np
import pytest
from scipy.special import logsumexp

from jaxvae import cli, config, runs

NUM_SAMPLES = 500
NUM_EXAMPLES = 120


def _mlp(layers: dict, x: np.ndarray) -> np.ndarray:
    """relu between layers, none after the last; layers {i: {kernel, bias}} as saved by jaxvae."""
    for i in range(len(layers)):
        x = x @ np.asarray(layers[i]["kernel"], np.float64) + np.asarray(layers[i]["bias"], np.float64)
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def _reference_log_px(params: dict, x: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    r"""log p(x) ~ log mean_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), for every row of x [N, 64] (float64)."""
    enc, dec = params["encoder"]["mlp"]["layers"], params["decoder"]["mlp"]["layers"]
    out = np.empty(x.shape[0])
    for n in range(x.shape[0]):  # deliberately slow: one example at a time
        xn = x[n].astype(np.float64)
        loc, log_scale = np.split(_mlp(enc, xn[None]), 2, axis=-1)  # [1, D] each
        eps = rng.standard_normal((num_samples, loc.shape[-1]))
        z = loc + np.exp(log_scale) * eps  # [K, D]
        logits = _mlp(dec, z)  # [K, 64]
        log_lik = np.sum(xn * logits - np.logaddexp(0.0, logits), axis=-1)
        log_prior = np.sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi), axis=-1)
        log_q = np.sum(-0.5 * eps**2 - log_scale - 0.5 * math.log(2 * math.pi), axis=-1)
        out[n] = logsumexp(log_lik + log_prior - log_q) - math.log(num_samples)
    return out


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("iwae-ref") / "run"
    cfg = config.apply_overrides(config.get_preset("digits"), [
        "train.steps=600", "train.checkpoint_every=600", "eval.num_samples=10", "eval.max_examples=50",
        "monitor.every=0"])
    runs.fit(cfg, workdir, progress=False, log=lambda _: None)
    return workdir


def test_evaluate_cli_agrees_with_float64_reference_loop(trained_digits, capsys):
    workdir = trained_digits
    rc = cli.main(["evaluate", "--workdir", str(workdir), "--num-samples", str(NUM_SAMPLES),
                   "--max-examples", str(NUM_EXAMPLES), "--seed", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"k={NUM_SAMPLES}" in printed and "bits/dim" in printed
    result = json.loads((workdir / "eval.json").read_text())
    assert result["num_examples"] == NUM_EXAMPLES and result["nll_num_samples"] == NUM_SAMPLES

    # The same examples the CLI picked (it documents: a sorted random subset drawn with --seed).
    ctx, params = runs.restore_run(workdir)
    data = ctx.dataset.split("test")
    idx = np.sort(np.random.default_rng(0).choice(data.shape[0], NUM_EXAMPLES, replace=False))
    x = np.asarray(data[idx]).reshape(NUM_EXAMPLES, -1)
    ref = _reference_log_px(params, x, NUM_SAMPLES, np.random.default_rng(123))
    ref_nll, ref_se = -ref.mean(), ref.std() / math.sqrt(NUM_EXAMPLES)

    # Within the standard error jaxvae reports (the criterion), and within the reference's own.
    diff = abs(result["nll_iwae"] - ref_nll)
    assert diff < result["nll_iwae_stderr"], (result, ref_nll, ref_se)
    assert diff < ref_se
    # The reported standard error is the spread over examples: it must match the reference's to 20%.
    assert result["nll_iwae_stderr"] == pytest.approx(ref_se, rel=0.2)
    # bits/dim is the same number in other units.
    assert result["bits_per_dim"] == pytest.approx(result["nll_iwae"] / (64 * math.log(2)), rel=1e-6)
    # And a looser, independent check of the bound: the IWAE NLL is below the ELBO's negative.
    assert result["nll_iwae"] <= -result["elbo"] + 1e-3
