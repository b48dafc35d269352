"""Disentanglement metrics: disentanglement_lib's own unit cases (``evaluation/metrics/*_test.py``), ported.

The reference tests use ``IdentityObservationsData`` (10 factors with values 1..10, observations = factors);
:func:`_identity_factors` draws the same (smaller where a classifier makes the full size slow). The BetaVAE and
FactorVAE scores also run on a small linear dataset (observations = a fixed random linear map of the scaled
factors), whose pseudo-inverse is a perfectly disentangled code and a rotation of it an entangled one.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from jaxvae.errors import ConfigError, DataError
from jaxvae.evaluation import disentanglement as dm


def _identity_factors(n: int, num_factors: int = 10, num_values: int = 10, seed: int = 0) -> np.ndarray:
    """``IdentityObservationsData.sample_factors``: ``[n, K]`` integers uniform in ``1..num_values``."""
    return np.random.default_rng(seed).integers(1, num_values + 1, size=(n, num_factors))


def _permuted(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """The reference's "bad" code: each example's factor values shuffled across the code dimensions."""
    rng = np.random.default_rng(seed)
    return np.array([rng.permutation(row) for row in codes], np.float64)


# The reference BetaVAE / FactorVAE data: observations are the factors themselves.
IDENTITY_DATA = dm.FactorData((10,) * 10, lambda factors, key: factors + 1)

SIZES = (4, 5, 6)
_W = np.random.default_rng(1).normal(size=(3, 8))
LINEAR_DATA = dm.FactorData(SIZES, lambda factors, key: (factors / (np.array(SIZES) - 1.0)) @ _W)
_DECODE = np.linalg.pinv(_W)  # [8, 3]: observations -> scaled factors
_ROTATE = np.array([[np.cos(np.pi / 4), -np.sin(np.pi / 4), 0.0], [np.sin(np.pi / 4), np.cos(np.pi / 4), 0.0],
                    [0.0, 0.0, 1.0]])


def _disentangled(x):
    return np.asarray(x) @ _DECODE


def _entangled(x):
    """Mixes factors 0 and 1 equally into both code dimensions 0 and 1."""
    return np.asarray(x) @ _DECODE @ _ROTATE


# ------------------------------------------------------------------------------------------ utils_test


def test_discretize_reference_case():
    target = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]]).T
    expected = np.array([[1, 1, 2, 2, 3, 3], [3, 3, 2, 2, 1, 1]]).T
    np.testing.assert_array_equal(dm.discretize(target, num_bins=3), expected)


def test_discretize_uses_num_bins_equal_width_bins():
    x = np.random.default_rng(0).normal(size=(2000, 3)) * np.array([1.0, 10.0, 0.1])
    out = dm.discretize(x, num_bins=20)
    assert out.dtype == np.int64 and out.min() == 1 and out.max() == 20
    for j in range(3):  # bin b holds exactly the values np.histogram counts in its b-th bin
        counts = np.bincount(out[:, j], minlength=21)[1:]
        np.testing.assert_array_equal(counts, np.histogram(x[:, j], bins=20)[0])
    assert np.unique(dm.discretize(np.full((5, 1), 3.0))).size == 1  # a constant dimension: one bin


def test_discrete_entropy_reference_case():
    target = np.array([[1, 1, 2, 2, 3, 3], [3, 3, 2, 2, 1, 1]]).T
    np.testing.assert_allclose(dm.discrete_entropy(target), [np.log(3), np.log(3)])


def test_discrete_mutual_info_reference_case():
    xs = np.array([[1, 2, 1, 2], [1, 1, 2, 2]]).T
    ys = np.array([[1, 2, 1, 2], [2, 2, 1, 1]]).T
    np.testing.assert_allclose(dm.discrete_mutual_info(xs, ys), [[np.log(2), 0.0], [0.0, np.log(2)]], atol=1e-12)


def test_discrete_mutual_info_and_entropy_match_sklearn():
    rng = np.random.default_rng(3)
    codes = np.stack([rng.integers(0, 7, 400), rng.integers(0, 3, 400)], axis=1)
    factors = np.stack([(codes[:, 0] + rng.integers(0, 2, 400)) % 5, rng.integers(10, 14, 400)], axis=1)
    expected = [[mutual_info_score(factors[:, k], codes[:, j]) for k in range(2)] for j in range(2)]
    np.testing.assert_allclose(dm.discrete_mutual_info(codes, factors), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dm.discrete_entropy(factors),
                               [mutual_info_score(factors[:, k], factors[:, k]) for k in range(2)], rtol=1e-12)
    assert dm.discrete_mutual_info(codes, factors)[0, 0] > 0.3  # the dependent pair is clearly informative


# -------------------------------------------------------------------------------------------- mig_test


def test_mig_identity_code_is_near_one():
    factors = _identity_factors(3000)
    assert 0.9 <= dm.mig(factors, factors, num_bins=None) <= 1.0  # the reference's identity discretiser
    # 20 histogram bins keep ten equally spaced values apart, so a monotone (affine) code scores the same.
    assert dm.mig(3.0 * factors + 1.0, factors) == pytest.approx(dm.mig(factors, factors, num_bins=None))
    assert dm.mig(-2.0 * factors, factors) == pytest.approx(dm.mig(factors, factors, num_bins=None))


def test_mig_constant_and_random_codes_are_near_zero():
    factors = _identity_factors(3000)
    assert dm.mig(np.zeros_like(factors), factors, num_bins=None) == 0.0
    noise = np.random.default_rng(5).normal(size=factors.shape)
    assert 0.0 <= dm.mig(noise, factors) < 0.05


def test_mig_duplicated_latent_space_is_near_zero():
    factors = _identity_factors(3000)
    assert 0.0 <= dm.mig(np.hstack([factors, factors]), factors, num_bins=None) <= 0.1
    # Only one copy carries the factor again: the gap comes back.
    noise = np.random.default_rng(5).integers(1, 11, size=factors.shape)
    assert dm.mig(np.hstack([factors, noise]), factors, num_bins=None) > 0.9


def test_mig_rejects_undefined_inputs():
    factors = _identity_factors(100, num_factors=2)
    with pytest.raises(DataError, match="D >= 2"):
        dm.mig(factors[:, :1], factors)
    with pytest.raises(DataError, match="constant"):
        dm.mig(factors, np.stack([factors[:, 0], np.ones(100, np.int64)], axis=1))
    with pytest.raises(DataError, match="one row per example"):
        dm.mig(factors[:50], factors)


# -------------------------------------------------------------------------------------- sap_score_test


def test_sap_continuous_reference_cases():
    factors = _identity_factors(3000)
    codes = factors.astype(np.float64)
    assert 0.9 <= dm.sap(codes, factors, continuous_factors=True) <= 1.0
    assert 0.0 <= dm.sap(np.zeros_like(codes), factors, continuous_factors=True) <= 0.2
    assert 0.0 <= dm.sap(np.hstack([codes, codes]), factors, continuous_factors=True) <= 0.2


def test_sap_continuous_matrix_is_squared_correlation():
    rng = np.random.default_rng(0)
    codes, factors = rng.normal(size=(300, 3)), rng.normal(size=(300, 2))
    factors[:, 0] += codes[:, 1]
    expected = np.corrcoef(codes.T, factors.T)[:3, 3:] ** 2
    np.testing.assert_allclose(dm.sap_score_matrix(codes, factors, continuous_factors=True), expected, rtol=1e-10)


def test_sap_discrete_identity_code_beats_permuted_code():
    train, test = _identity_factors(1000, 3, 5, seed=0), _identity_factors(1000, 3, 5, seed=1)
    matrix = dm.sap_score_matrix(train.astype(float), train, test.astype(float), test)
    np.testing.assert_array_equal(np.argmax(matrix, axis=0), np.arange(3))  # each factor's own dimension
    good = dm.sap(train.astype(float), train, test.astype(float), test)
    bad = dm.sap(_permuted(train), train, _permuted(test, seed=1), test)
    assert good > 0.2 and 0.0 <= bad < 0.05
    assert dm.sap(train.astype(float), train, test.astype(float), test, key=jax.random.key(0)) == good
    with pytest.raises(DataError, match="test_codes"):
        dm.sap(train.astype(float), train)


# ------------------------------------------------------------------------------------------- dci_test

_DIAG = np.diag(5.0 * np.ones(5))
_MATRIX_CASES = {  # name: (importance, expected disentanglement, expected completeness)
    "diagonal": (_DIAG, 1.0, 1.0),
    "diagonal_empty_codes": (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 1.0, 1.0),
    "zero": (np.zeros((10, 10)), 0.0, 0.0),
    "redundant_codes": (np.vstack([_DIAG, _DIAG]), 1.0, 1.0 - np.log(2) / np.log(10)),
    "missed_factors": (_DIAG[:2, :], 1.0, 1.0),
    "one_code_two_factors": (np.hstack([_DIAG, _DIAG]), 1.0 - np.log(2) / np.log(10), 1.0),
}


@pytest.mark.parametrize("name", sorted(_MATRIX_CASES))
def test_dci_importance_matrix_reference_cases(name):
    importance, disentanglement, completeness = _MATRIX_CASES[name]
    np.testing.assert_allclose(dm.dci_disentanglement(importance), disentanglement, atol=1e-7)
    np.testing.assert_allclose(dm.dci_completeness(importance), completeness, atol=1e-7)


def test_dci_identity_code():
    train, test = _identity_factors(500, 4, 5, seed=0), _identity_factors(500, 4, 5, seed=1)
    scores = dm.dci(train, train, test, test)
    assert 0.9 <= scores.disentanglement <= 1.0 and 0.9 <= scores.completeness <= 1.0
    assert scores.informativeness_train == 1.0 and scores.informativeness_test == 1.0


def test_dci_permuted_code_is_near_zero():
    train, test = _identity_factors(500, 4, 5, seed=0), _identity_factors(500, 4, 5, seed=1)
    scores = dm.dci(_permuted(train), train, _permuted(test, seed=1), test)
    assert 0.0 <= scores.disentanglement <= 0.2 and 0.0 <= scores.completeness <= 0.2
    assert scores.informativeness_test < 0.8


def test_dci_duplicated_latent_space_and_key():
    train, test = _identity_factors(500, 3, 5, seed=0), _identity_factors(500, 3, 5, seed=1)
    codes, codes_test = np.hstack([train, train]), np.hstack([test, test])
    scores = dm.dci(codes, train, codes_test, test, key=jax.random.key(0))
    assert 0.9 <= scores.disentanglement <= 1.0
    target = 1.0 - np.log(2) / np.log(6)  # each factor's importance split over 2 of D = 6 codes
    assert target - 0.1 <= scores.completeness <= target + 0.1
    # The key only breaks ties between the two identical copies: same key, same matrix; another key, another.
    first = dm.gbt_importance(codes, train, codes_test, test, key=jax.random.key(0))[0]
    again = dm.gbt_importance(codes, train, codes_test, test, key=jax.random.key(0))[0]
    other = dm.gbt_importance(codes, train, codes_test, test, key=jax.random.key(1))[0]
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3
    np.testing.assert_allclose(first[:3] + first[3:], other[:3] + other[3:], atol=1e-6)


# ----------------------------------------------------------------------------- modularity_explicitness_test

_MODULARITY_CASES = {
    "diagonal": (_DIAG, 1.0),
    "diagonal_empty_codes": (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 2.0 / 3.0),
    "zero": (np.zeros((10, 10)), 0.0),
    "redundant_codes": (np.vstack([_DIAG, _DIAG]), 1.0),
    "missed_factors": (_DIAG[:2, :], 1.0),
    "one_code_two_factors": (np.hstack([_DIAG, _DIAG]), 1.0 - 1.0 / 9.0),
}


@pytest.mark.parametrize("name", sorted(_MODULARITY_CASES))
def test_modularity_matrix_reference_cases(name):
    mutual_information, expected = _MODULARITY_CASES[name]
    np.testing.assert_allclose(dm.modularity(mutual_information), expected, atol=1e-12)


def test_modularity_explicitness_identity_code():
    train, test = _identity_factors(3000, 4, 5, seed=0), _identity_factors(3000, 4, 5, seed=1)
    scores = dm.modularity_explicitness(train, train, test, test, num_bins=None)
    assert 0.9 <= scores.modularity <= 1.0
    assert scores.explicitness_train > 0.95 and scores.explicitness_test > 0.95
    binned = dm.modularity_explicitness(train.astype(float), train, test.astype(float), test)  # 20 bins
    assert binned.modularity == pytest.approx(scores.modularity)


def test_modularity_permuted_code_is_low():
    train, test = _identity_factors(3000, 4, 5, seed=0), _identity_factors(3000, 4, 5, seed=1)
    scores = dm.modularity_explicitness(_permuted(train), train, _permuted(test, seed=1), test, num_bins=None)
    assert 0.0 <= scores.modularity <= 0.2
    assert scores.explicitness_test < 0.8
    # Codes are standardised with the training statistics, so rescaling a dimension changes nothing.
    scale, shift = np.array([1e-3, 1.0, 1e2, 1e4]), np.array([5.0, -3.0, 1e3, 0.0])
    rescaled = dm.modularity_explicitness(_permuted(train) * scale + shift, train,
                                          _permuted(test, seed=1) * scale + shift, test, num_bins=None)
    assert rescaled.explicitness_train == pytest.approx(scores.explicitness_train, abs=1e-6)
    assert rescaled.explicitness_test == pytest.approx(scores.explicitness_test, abs=1e-6)


def test_modularity_duplicated_and_mixed_codes():
    factors = _identity_factors(3000, 4, 5)
    duplicated = dm.discrete_mutual_info(np.hstack([factors, factors]), factors)
    assert 0.9 <= dm.modularity(duplicated) <= 1.0
    # Code 0 carries factors 0 and 1 (one-to-one), the others one factor each: code 0 scores
    # 1 - 1 / (K - 1) and the mean over D = 4 codes drops from 1 to 1 - 1 / (D (K - 1)) = 11 / 12.
    mixed = factors.copy()
    mixed[:, 0] = 10 * factors[:, 0] + factors[:, 1]
    assert dm.modularity(dm.discrete_mutual_info(factors, factors)) == pytest.approx(1.0, abs=1e-3)
    assert dm.modularity(dm.discrete_mutual_info(mixed, factors)) == pytest.approx(11.0 / 12.0, abs=0.01)


# ----------------------------------------------------------------------------------------- beta_vae_test


def test_beta_vae_identity_reference_case():
    scores = dm.beta_vae_score(lambda x: x, IDENTITY_DATA, jax.random.key(0), batch_size=5, num_train=2000,
                               num_eval=2000)
    assert 0.9 <= scores.train_accuracy <= 1.0 and 0.9 <= scores.eval_accuracy <= 1.0


def test_beta_vae_constant_code_is_at_chance():
    scores = dm.beta_vae_score(np.zeros_like, IDENTITY_DATA, jax.random.key(0), batch_size=5, num_train=1000,
                               num_eval=1000)
    assert scores.eval_accuracy <= 0.2  # chance is 1 / 10


def test_beta_vae_entangled_code_scores_lower_and_keys():
    good = dm.beta_vae_score(_disentangled, LINEAR_DATA, jax.random.key(0), batch_size=16, num_train=300,
                             num_eval=200)
    bad = dm.beta_vae_score(_entangled, LINEAR_DATA, jax.random.key(0), batch_size=16, num_train=300,
                            num_eval=200)
    assert good.eval_accuracy > 0.95 and bad.eval_accuracy < good.eval_accuracy - 0.1
    again = dm.beta_vae_score(_entangled, LINEAR_DATA, jax.random.key(0), batch_size=16, num_train=300,
                              num_eval=200)
    other = dm.beta_vae_score(_entangled, LINEAR_DATA, jax.random.key(1), batch_size=16, num_train=300,
                              num_eval=200)
    assert again == bad and other != bad


# --------------------------------------------------------------------------------------- factor_vae_test


def test_factor_vae_identity_reference_case():
    scores = dm.factor_vae_score(lambda x: x, IDENTITY_DATA, jax.random.key(0), batch_size=5, num_train=3000,
                                 num_eval=2000, num_variance_estimate=2500)
    assert 0.9 <= scores.train_accuracy <= 1.0 and 0.9 <= scores.eval_accuracy <= 1.0
    assert scores.num_active_dims == 10


def test_factor_vae_constant_code():
    settings = dict(batch_size=5, num_train=3000, num_eval=2000, num_variance_estimate=2500)
    # The reference test runs with the function's own threshold 0: nothing is pruned, votes are at chance.
    unpruned = dm.factor_vae_score(np.zeros_like, IDENTITY_DATA, jax.random.key(0), prune_threshold=0.0,
                                   **settings)
    assert 0.0 <= unpruned.train_accuracy <= 0.2 and 0.0 <= unpruned.eval_accuracy <= 0.2
    assert unpruned.num_active_dims == 10 and unpruned.eval_accuracy > 0.05  # all votes go to dimension 0
    # With the study's threshold 0.05 every dimension is collapsed and the scores are 0.
    assert dm.factor_vae_score(np.zeros_like, IDENTITY_DATA, jax.random.key(0), **settings) == (0.0, 0.0, 0)


def test_factor_vae_prunes_collapsed_dimensions():
    def with_collapsed(x):  # a fourth dimension of standard deviation 0.01 that would win every vote
        codes = _disentangled(x)
        return np.concatenate([codes, 0.01 * np.sin(1000.0 * codes[:, :1])], axis=1)

    settings = dict(batch_size=16, num_train=300, num_eval=200, num_variance_estimate=500)
    pruned = dm.factor_vae_score(with_collapsed, LINEAR_DATA, jax.random.key(0), **settings)
    assert pruned.num_active_dims == 3 and pruned.eval_accuracy > 0.95
    kept = dm.factor_vae_score(with_collapsed, LINEAR_DATA, jax.random.key(0), prune_threshold=0.001, **settings)
    assert kept.num_active_dims == 4


def test_factor_vae_entangled_code_scores_lower_and_keys():
    settings = dict(batch_size=16, num_train=300, num_eval=200, num_variance_estimate=500)
    good = dm.factor_vae_score(_disentangled, LINEAR_DATA, jax.random.key(0), **settings)
    bad = dm.factor_vae_score(_entangled, LINEAR_DATA, jax.random.key(0), **settings)
    assert good.eval_accuracy > 0.95 and bad.eval_accuracy < good.eval_accuracy - 0.1
    assert dm.factor_vae_score(_entangled, LINEAR_DATA, jax.random.key(0), **settings) == bad
    assert dm.factor_vae_score(_entangled, LINEAR_DATA, jax.random.key(1), **settings) != bad
    with pytest.raises(ConfigError, match="batch_size"):
        dm.factor_vae_score(_entangled, LINEAR_DATA, jax.random.key(0), batch_size=1)


# ---------------------------------------------------------------------------------- data and compute_all


def test_sample_factors_uniform_and_keyed():
    factors = LINEAR_DATA.sample_factors(jax.random.key(0), 6000)
    assert factors.shape == (6000, 3) and factors.dtype == np.int64
    for k, size in enumerate(SIZES):
        counts = np.bincount(factors[:, k], minlength=size)
        assert counts.shape == (size,) and np.all(np.abs(counts / 6000 - 1 / size) < 0.03)
    np.testing.assert_array_equal(factors, LINEAR_DATA.sample_factors(jax.random.key(0), 6000))
    assert not np.array_equal(factors, LINEAR_DATA.sample_factors(jax.random.key(1), 6000))
    # Raw uint32 keys carry the same bits as typed keys and give the same draws.
    np.testing.assert_array_equal(factors, LINEAR_DATA.sample_factors(jax.random.PRNGKey(0), 6000))
    with pytest.raises(ConfigError, match="factor_sizes"):
        dm.FactorData((3, 0), lambda y, key: y)


def test_sample_codes_chunks_with_one_batch_shape():
    shapes = []

    def recording(x):
        shapes.append(np.shape(x))
        return _disentangled(x)

    codes, factors = dm.sample_codes(recording, LINEAR_DATA, jax.random.key(0), 100, chunk_size=32)
    assert codes.shape == (100, 3) and factors.shape == (100, 3)
    assert set(shapes) == {(32, 8)} and len(shapes) == 4  # the last chunk is padded, not smaller
    np.testing.assert_allclose(codes, factors / (np.array(SIZES) - 1.0), atol=1e-10)
    whole, _ = dm.sample_codes(_disentangled, LINEAR_DATA, jax.random.key(0), 100, chunk_size=1000)
    np.testing.assert_allclose(codes, whole, atol=1e-12)
    jitted, _ = dm.sample_codes(jax.jit(lambda x: x @ _DECODE), LINEAR_DATA, jax.random.key(0), 100,
                                chunk_size=32)  # a JAX representation (float32) works the same way
    np.testing.assert_allclose(jitted, codes, atol=1e-5)
    with pytest.raises(DataError, match="representation_fn"):
        dm.sample_codes(lambda x: np.zeros((1, 2)), LINEAR_DATA, jax.random.key(0), 10)


def test_compute_all_names_values_and_determinism():
    settings = dict(num_train=300, num_test=200, batch_size=16, num_variance_estimate=300)
    good = dm.compute_all(_disentangled, LINEAR_DATA, jax.random.key(0), **settings)
    assert list(good) == ["mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness_train",
                          "dci_informativeness_test", "modularity", "explicitness_train", "explicitness_test",
                          "beta_vae_train_accuracy", "beta_vae_score", "factor_vae_train_accuracy",
                          "factor_vae_score", "factor_vae_num_active_dims"]
    assert all(isinstance(v, float) for v in good.values())
    for name in ("mig", "dci_disentanglement", "dci_completeness", "modularity", "beta_vae_score",
                 "factor_vae_score"):
        assert good[name] > 0.8, name
    assert good["factor_vae_num_active_dims"] == 3.0
    bad = dm.compute_all(_entangled, LINEAR_DATA, jax.random.key(0), **settings)
    for name in ("mig", "sap", "dci_disentanglement", "modularity", "beta_vae_score", "factor_vae_score"):
        assert bad[name] < good[name], name
    subset = dm.compute_all(_entangled, LINEAR_DATA, jax.random.key(0), metrics=("mig", "factor_vae"), **settings)
    assert subset == {name: bad[name] for name in ("mig", "factor_vae_train_accuracy", "factor_vae_score",
                                                   "factor_vae_num_active_dims")}
    with pytest.raises(ConfigError, match="unknown disentanglement metrics"):
        dm.compute_all(_entangled, LINEAR_DATA, jax.random.key(0), metrics=("irs",))


# ------------------------------------------------------------------------------- a dataset as ground truth


def _grid_dataset(sizes=(1, 3, 4, 5), drop: int = 0, duplicate: int = 0):
    """A Dataset whose splits together hold every combination of ``sizes`` once (in a shuffled order), an
    example being its factor classes written into a [*, 4] float image; ``drop`` combinations left out and
    ``duplicate`` examples repeated with other pixels."""
    from jaxvae.data import Dataset

    grid = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1).astype(np.int32)
    grid = grid[np.random.default_rng(0).permutation(len(grid))][drop:]
    x = grid.astype(np.float32).reshape(len(grid), len(sizes), 1)
    if duplicate:
        grid = np.concatenate([grid, grid[:duplicate]])
        x = np.concatenate([x, x[:duplicate] + 100.0])
    a, b = len(grid) // 2, 3 * len(grid) // 4
    return Dataset(x[:a], x[a:b], x[b:], name="grid", event_shape=(len(sizes), 1), support="real",
                   factors={"train": grid[:a], "valid": grid[a:b], "test": grid[b:]},
                   factor_names=("color", "a", "b", "c"), factor_sizes=sizes)


def test_dataset_factors_look_up_every_combination_and_drop_constant_factors():
    data = dm.DatasetFactors.from_dataset(_grid_dataset(duplicate=7))
    assert data.factor_sizes == (3, 4, 5) and data.factor_names == ("a", "b", "c")
    factors = data.sample_factors(jax.random.key(0), 500)
    x = data.observations(factors, jax.random.key(1))  # [500, 4, 1]: (color 0, a, b, c) as written
    np.testing.assert_array_equal(x[:, 1:, 0], factors)  # the first example of a duplicated combination wins
    np.testing.assert_array_equal(x[:, 0, 0], 0.0)
    # The identity code of the three varying factors scores near 1 through the whole pipeline.
    scores = dm.compute_all(lambda obs: np.asarray(obs)[:, 1:, 0], data, jax.random.key(2),
                            metrics=["mig", "factor_vae"], num_train=2000, num_test=1000, batch_size=16,
                            num_variance_estimate=2000)
    assert scores["mig"] > 0.9 and scores["factor_vae_score"] == 1.0


def test_dataset_factors_refuse_incomplete_grids_and_missing_factors():
    with pytest.raises(DataError, match=r"3 of the 60 combinations .* have no example"):
        dm.DatasetFactors.from_dataset(_grid_dataset(drop=3))
    from jaxvae.data import Dataset

    x = np.zeros((4, 2), np.float32)
    with pytest.raises(DataError, match=r"no ground-truth factors; .*dsprites"):
        dm.DatasetFactors.from_dataset(Dataset(x, x, x, name="plain", event_shape=(2,), support="real"))
    with pytest.raises(DataError, match="single value"):
        dm.DatasetFactors(x, np.zeros((4, 1), np.int64), (1,))
    with pytest.raises(DataError, match=r"classes 0\.\.size-1"):
        dm.DatasetFactors(x, np.full((4, 1), 2), (2,))
