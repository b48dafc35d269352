r"""Disentanglement metrics: how well a representation's dimensions line up with known factors of variation.

Every metric follows the reference definitions and default settings of ``google-research/disentanglement_lib``
(Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations", ICML), files ``disentanglement_lib/evaluation/metrics/*.py`` and the study settings in
``disentanglement_lib/config/unsupervised_study_v1/metric_configs/*.gin``. Shapes are row-major, one example a
row: codes ``[N, D]`` (e.g. posterior means), factors ``[N, K]`` (integer factor values). The reference stores
both transposed; the numbers are the same.

* **MIG** (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of Disentanglement in VAEs"), :func:`mig`: each
  code dimension is discretised into 20 equal-width histogram bins (:func:`discretize`), then

  .. math:: \mathrm{MIG} = \frac1K \sum_k \frac{I(z_{j^{(1)}_k}; y_k) - I(z_{j^{(2)}_k}; y_k)}{H(y_k)},

  with :math:`j^{(1)}_k, j^{(2)}_k` the code dimensions of largest and second-largest discrete mutual
  information with factor :math:`k` (nats; reference ``mig.py``, ``utils.py``; 10,000 points).
* **SAP** (Kumar, Sattigeri & Balakrishnan 2018, "Variational Inference of Disentangled Latent Concepts from
  Unlabeled Observations", Sec. 3), :func:`sap`: a score matrix ``S [D, K]`` of one-dimensional predictors, the
  test accuracy of ``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")`` trained on code dimension ``j``
  alone for discrete factors (the study setting), the squared correlation
  :math:`\mathrm{Cov}(z_j, y_k)^2 / (\mathrm{Var}\, z_j \mathrm{Var}\, y_k)` (zero when
  :math:`\mathrm{Var}\, z_j \le 10^{-12}`) for continuous ones; the score is the mean over factors of the gap
  between the two largest entries of each column (reference ``sap_score.py``; 10,000 train / 5,000 test points).
* **DCI** (Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of Disentangled
  Representations"), :func:`dci`: one ``sklearn.ensemble.GradientBoostingClassifier()`` (its defaults) per
  factor gives the importance matrix ``R [D, K]`` (absolute feature importances) and the train/test accuracies
  (informativeness). With :math:`P_{jk} = R_{jk} / \sum_k R_{jk}` and :math:`H_K` the entropy in base :math:`K`,

  .. math:: D = \sum_j \rho_j (1 - H_K(P_{j\cdot})), \quad \rho_j = \frac{\sum_k R_{jk}}{\sum_{jk} R_{jk}},

  and completeness is the same with the roles of codes and factors swapped (entropy in base :math:`D`); the
  reference adds :math:`10^{-11}` to ``R`` inside the entropies (reference ``dci.py``; 10,000 / 5,000 points).
* **Modularity and explicitness** (Ridgeway & Mozer 2018, "Learning Deep Disentangled Embeddings With the
  F-Statistic Loss"), :func:`modularity_explicitness`: with :math:`m_{jk}` the discrete mutual information of
  code ``j`` (20 histogram bins) and factor ``k``, :math:`\theta_j = \max_k m_{jk}`,

  .. math:: \mathrm{modularity} = \frac1D \sum_j \left(1 - \frac{\sum_k m_{jk}^2 - \theta_j^2}
            {\theta_j^2 (K - 1)}\right) \quad (0 \text{ for a code with } \theta_j = 0);

  explicitness is the macro ROC-AUC of ``sklearn.linear_model.LogisticRegression()`` (its defaults) predicting
  each factor from all codes, standardised with the training mean and standard deviation, averaged over factors
  (reference ``modularity_explicitness.py``; 10,000 / 5,000 points).
* **BetaVAE score** (Higgins et al. 2017, "β-VAE: Learning Basic Visual Concepts with a Constrained Variational
  Framework"), :func:`beta_vae_score`: a training point is a factor index ``k`` drawn uniformly and the feature
  :math:`\frac1B \sum_b |z(x^{(1)}_b) - z(x^{(2)}_b)|` of ``B = 64`` pairs of observations whose factors are
  drawn independently except for factor ``k``, shared within each pair; the score is the evaluation accuracy of
  ``sklearn.linear_model.LogisticRegression()`` predicting ``k`` (reference ``beta_vae.py``, 10,000 training and
  5,000 evaluation points).
* **FactorVAE score** (Kim & Mnih 2018, "Disentangling by Factorising"), :func:`factor_vae_score`: the global
  variance of each code dimension is estimated on 10,000 observations (``ddof=1``); dimensions whose standard
  deviation is below 0.05 are pruned (``prune_dims.threshold = 0.05`` of the study); a training point fixes one
  uniformly drawn factor ``k`` across a batch of ``B = 64`` observations and votes for the active dimension of
  least variance relative to its global variance; the classifier is the majority vote per dimension and the
  score its accuracy on evaluation votes (reference ``factor_vae.py``, 10,000 training and 5,000 evaluation
  points).

The four code-based metrics (MIG, SAP, DCI, modularity/explicitness) are pure functions of arrays. The BetaVAE
and FactorVAE scores need to sample observations for chosen factors, through a :class:`GroundTruthData`
(:class:`FactorData` builds one from a function). All randomness comes from explicit ``jax.random`` keys (numpy
generators and scikit-learn seeds are derived from them), so every metric is deterministic for a given key.
:func:`compute_all` runs all of them and returns a flat ``dict`` of floats with stable names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxvae.data.factors import GroundTruthData
from jaxvae.data.factors import numpy_rng as _numpy_rng
from jaxvae.errors import ConfigError, DataError

Array = jax.Array
ArrayLike = Array | np.ndarray
RepresentationFn = Callable[[Any], ArrayLike]

__all__ = [
    "METRICS",
    "BetaVAEScore",
    "DCIScores",
    "DatasetFactors",
    "FactorData",
    "FactorVAEScore",
    "GroundTruthData",
    "ModularityExplicitness",
    "beta_vae_score",
    "compute_all",
    "dci",
    "dci_completeness",
    "dci_disentanglement",
    "discrete_entropy",
    "discrete_mutual_info",
    "discretize",
    "factor_vae_score",
    "gbt_importance",
    "mig",
    "modularity",
    "modularity_explicitness",
    "sample_codes",
    "sap",
    "sap_score_matrix",
]

# The metric groups :func:`compute_all` can run, in the order it runs them.
METRICS = ("mig", "sap", "dci", "modularity_explicitness", "beta_vae", "factor_vae")


# ------------------------------------------------------------------------------------------ small helpers


def _sklearn_seed(key: Array) -> int:
    """An ``int`` seed for a scikit-learn ``random_state`` derived from a JAX key."""
    return int(_numpy_rng(key).integers(2**31 - 1))


def _default_key(key: Array | None) -> Array:
    return jax.random.key(0) if key is None else key


def _as_matrix(x: ArrayLike, name: str, dtype: Any = np.float64) -> np.ndarray:
    """``x`` as a 2-D host array ``[N, ·]``, or a clear error."""
    out = np.asarray(x, dtype=dtype)
    if out.ndim != 2 or out.shape[0] == 0 or out.shape[1] == 0:
        raise DataError(f"{name} must be a non-empty [N, dims] array (one example a row), got shape {out.shape}.")
    if not np.all(np.isfinite(out)):
        raise DataError(f"{name} contains NaN or infinite values; disentanglement metrics need finite inputs.")
    return out


def _pair(codes: ArrayLike, factors: ArrayLike, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Checks and converts one ``(codes [N, D], factors [N, K])`` pair."""
    c = _as_matrix(codes, f"{where} codes")
    f = _as_matrix(factors, f"{where} factors", dtype=None)  # integer factors stay integers
    if c.shape[0] != f.shape[0]:
        raise DataError(f"{where} codes and factors must have one row per example; got {c.shape[0]} code rows "
                        f"and {f.shape[0]} factor rows.")
    return c, f


def _check_factors_vary(factors: np.ndarray, metric: str) -> None:
    constant = [k for k in range(factors.shape[1]) if np.all(factors[:, k] == factors[0, k])]
    if constant:
        raise DataError(f"{metric} is undefined for a factor that takes a single value in the sample; factors "
                        f"{constant} are constant. Drop them or sample more points.")


def _check_positive(name: str, value: int, minimum: int = 1) -> None:
    if int(value) != value or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _entropy(p: np.ndarray, axis: int, base: int) -> np.ndarray:
    """Entropy in base ``base`` of the (unnormalised, positive) distributions along ``axis``."""
    p = p / np.sum(p, axis=axis, keepdims=True)
    return -np.sum(p * np.log(p), axis=axis) / np.log(base)


# ------------------------------------------------------------------------------- discretisation and MI


def discretize(codes: ArrayLike, num_bins: int = 20) -> np.ndarray:
    """Histogram discretisation of each code dimension, ``[N, D] -> [N, D]`` integers in ``1..num_bins``.

    Dimension ``j`` is cut into ``num_bins`` equal-width bins spanning ``[min z_j, max z_j]`` and each value
    gets the index of its bin (``np.digitize`` against the left bin edges of ``np.histogram``), as
    disentanglement_lib's ``_histogram_discretize`` (``utils.py``; the study uses ``num_bins = 20``). A constant
    dimension falls in a single bin.
    """
    _check_positive("num_bins", num_bins)
    codes = _as_matrix(codes, "codes")
    out = np.empty(codes.shape, np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins=num_bins)[1][:-1]
        out[:, j] = np.digitize(codes[:, j], edges)
    return out


def _labels(column: np.ndarray) -> tuple[np.ndarray, int]:
    values, inverse = np.unique(column, return_inverse=True)
    return inverse.ravel(), values.shape[0]


def discrete_entropy(labels: ArrayLike) -> np.ndarray:
    r"""Plug-in entropy :math:`H(y_k) = -\sum_v \hat p(v) \log \hat p(v)` (nats) of each column, ``[N, K] -> [K]``.

    The same as disentanglement_lib's ``discrete_entropy`` (``sklearn.metrics.mutual_info_score(y, y)``).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise DataError(f"labels must be a non-empty [N, K] array, got shape {labels.shape}.")
    out = np.empty(labels.shape[1])
    for k in range(labels.shape[1]):
        inverse, n_values = _labels(labels[:, k])
        p = np.bincount(inverse, minlength=n_values) / labels.shape[0]
        out[k] = -np.sum(p * np.log(p))
    return np.maximum(out, 0.0)


def discrete_mutual_info(discrete_codes: ArrayLike, factors: ArrayLike) -> np.ndarray:
    r"""Plug-in mutual information :math:`I(z_j; y_k)` (nats) of discrete codes and factors, ``[D, K]``.

    .. math:: I(z_j; y_k) = \sum_{a, b} \hat p(a, b) \log \frac{\hat p(a, b)}{\hat p(a) \hat p(b)}

    from the contingency table of the ``N`` pairs (clipped at 0), the same as disentanglement_lib's
    ``discrete_mutual_info`` (``sklearn.metrics.mutual_info_score`` per pair).

    Args:
      discrete_codes: discrete code values ``[N, D]`` (e.g. from :func:`discretize`).
      factors: factor values ``[N, K]``.
    """
    codes, factors = np.asarray(discrete_codes), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or codes.shape[0] != factors.shape[0] or codes.shape[0] == 0:
        raise DataError(f"discrete_mutual_info needs codes [N, D] and factors [N, K] with the same N > 0, got "
                        f"{codes.shape} and {factors.shape}.")
    n = codes.shape[0]
    code_labels = [_labels(codes[:, j]) for j in range(codes.shape[1])]
    factor_labels = [_labels(factors[:, k]) for k in range(factors.shape[1])]
    out = np.zeros((codes.shape[1], factors.shape[1]))
    for j, (a, na) in enumerate(code_labels):
        pa = np.bincount(a, minlength=na) / n  # [na]
        for k, (b, nb) in enumerate(factor_labels):
            pb = np.bincount(b, minlength=nb) / n  # [nb]
            joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb) / n  # [na, nb]
            ia, ib = np.nonzero(joint)
            pj = joint[ia, ib]
            out[j, k] = np.sum(pj * (np.log(pj) - np.log(pa[ia]) - np.log(pb[ib])))
    return np.maximum(out, 0.0)


# ----------------------------------------------------------------------------------------------- MIG


def mig(codes: ArrayLike, factors: ArrayLike, num_bins: int | None = 20) -> float:
    r"""Mutual Information Gap (Chen et al. 2018), as disentanglement_lib's ``mig.py``.

    .. math:: \mathrm{MIG} = \frac1K \sum_k \frac{I(z_{j^{(1)}_k}; y_k) - I(z_{j^{(2)}_k}; y_k)}{H(y_k)}

    Codes are discretised with :func:`discretize` into ``num_bins`` histogram bins per dimension (20 in the
    study; the study draws 10,000 points); ``num_bins=None`` uses ``codes`` as they are (already discrete, like
    the reference tests' identity discretiser). 1 for codes that copy the factors (or any one-to-one function of
    each), 0 for constant codes and for codes where every factor is captured equally by two dimensions.

    Args:
      codes: the representation of each example, ``[N, D]`` with ``D >= 2``.
      factors: the discrete ground-truth factors of each example, ``[N, K]``, none of them constant.
    """
    codes, factors = _pair(codes, factors, "mig")
    if codes.shape[1] < 2:
        raise DataError(f"MIG compares the two most informative code dimensions and needs D >= 2, got "
                        f"D = {codes.shape[1]}.")
    discrete = codes if num_bins is None else discretize(codes, num_bins)
    entropy = discrete_entropy(factors)  # [K]
    if np.any(entropy <= 0.0):
        _check_factors_vary(factors, "MIG")
    info = np.sort(discrete_mutual_info(discrete, factors), axis=0)  # [D, K], ascending
    return float(np.mean((info[-1] - info[-2]) / entropy))


# ----------------------------------------------------------------------------------------------- SAP


def sap_score_matrix(codes: ArrayLike, factors: ArrayLike, test_codes: ArrayLike | None = None,
                     test_factors: ArrayLike | None = None, *, continuous_factors: bool = False,
                     key: Array | None = None) -> np.ndarray:
    r"""The SAP score matrix ``S [D, K]`` of Kumar et al. (2018, Sec. 3), as disentanglement_lib's
    ``compute_score_matrix`` (``sap_score.py``).

    Discrete factors (``continuous_factors=False``, the study setting): :math:`S_{jk}` is the accuracy on
    ``(test_codes, test_factors)`` of ``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")`` fitted to
    predict factor ``k`` from code dimension ``j`` alone on ``(codes, factors)``. Continuous factors:
    :math:`S_{jk} = \mathrm{Cov}(z_j, y_k)^2 / (\mathrm{Var}\, z_j \, \mathrm{Var}\, y_k)` on the training pair
    (``ddof=1``), 0 where :math:`\mathrm{Var}\, z_j \le 10^{-12}`; the test pair is not used.

    ``key`` seeds the classifiers' ``random_state`` (default ``jax.random.key(0)``).
    """
    codes, factors = _pair(codes, factors, "sap")
    _check_factors_vary(factors, "SAP")
    num_codes, num_factors = codes.shape[1], factors.shape[1]
    if continuous_factors:
        zc = codes - codes.mean(axis=0)
        yc = factors - factors.mean(axis=0)
        n = codes.shape[0]
        if n < 2:
            raise DataError("SAP with continuous factors needs at least 2 examples.")
        cov = zc.T @ yc / (n - 1)  # [D, K]
        var_z = np.sum(zc**2, axis=0) / (n - 1)  # [D]
        var_y = np.sum(yc**2, axis=0) / (n - 1)  # [K]
        with np.errstate(divide="ignore", invalid="ignore"):
            score = cov**2 / (var_z[:, None] * var_y[None, :])
        return np.where(var_z[:, None] > 1e-12, score, 0.0)
    if test_codes is None or test_factors is None:
        raise DataError("SAP with discrete factors scores classifiers on held-out data: pass test_codes and "
                        "test_factors (or continuous_factors=True).")
    test_codes, test_factors = _pair(test_codes, test_factors, "sap test")
    if test_codes.shape[1] != num_codes or test_factors.shape[1] != num_factors:
        raise DataError(f"sap train and test sets must have the same dimensions; got codes {num_codes} vs "
                        f"{test_codes.shape[1]}, factors {num_factors} vs {test_factors.shape[1]}.")
    from sklearn.svm import LinearSVC

    rng = _numpy_rng(_default_key(key))
    score = np.zeros((num_codes, num_factors))
    for j in range(num_codes):
        for k in range(num_factors):
            classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=int(rng.integers(2**31 - 1)))
            classifier.fit(codes[:, j:j + 1], factors[:, k])
            score[j, k] = np.mean(classifier.predict(test_codes[:, j:j + 1]) == test_factors[:, k])
    return score


def sap(codes: ArrayLike, factors: ArrayLike, test_codes: ArrayLike | None = None,
        test_factors: ArrayLike | None = None, *, continuous_factors: bool = False,
        key: Array | None = None) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018), as disentanglement_lib's ``sap_score.py``.

    The mean over factors of the gap between the largest and the second-largest entry of that factor's column
    of :func:`sap_score_matrix` (see there for the classifiers; the study uses discrete factors and 10,000
    training / 5,000 test points). Needs ``D >= 2`` code dimensions.
    """
    score = sap_score_matrix(codes, factors, test_codes, test_factors, continuous_factors=continuous_factors,
                             key=key)
    if score.shape[0] < 2:
        raise DataError(f"SAP compares the two most predictive code dimensions and needs D >= 2, got "
                        f"D = {score.shape[0]}.")
    ordered = np.sort(score, axis=0)
    return float(np.mean(ordered[-1] - ordered[-2]))


# ----------------------------------------------------------------------------------------------- DCI


class DCIScores(NamedTuple):
    """Eastwood & Williams (2018) scores; informativeness is the gradient-boosted trees' mean accuracy."""

    disentanglement: float
    completeness: float
    informativeness_train: float
    informativeness_test: float


def gbt_importance(train_codes: ArrayLike, train_factors: ArrayLike, test_codes: ArrayLike,
                   test_factors: ArrayLike, *, key: Array | None = None) -> tuple[np.ndarray, float, float]:
    """The importance matrix ``R [D, K]`` and mean train/test accuracies of gradient-boosted trees.

    One ``sklearn.ensemble.GradientBoostingClassifier()`` with scikit-learn's defaults (100 stages of depth-3
    trees, learning rate 0.1) per factor predicts it from all codes; ``R[:, k]`` is the absolute value of its
    impurity-based ``feature_importances_`` (disentanglement_lib's ``compute_importance_gbt``, ``dci.py``).
    ``key`` seeds each classifier's ``random_state`` (default ``jax.random.key(0)``; it only breaks ties
    between equally good splits).

    Returns:
      ``(importance [D, K], mean train accuracy, mean test accuracy)``.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    x_train, y_train = _pair(train_codes, train_factors, "dci train")
    x_test, y_test = _pair(test_codes, test_factors, "dci test")
    if x_test.shape[1] != x_train.shape[1] or y_test.shape[1] != y_train.shape[1]:
        raise DataError(f"dci train and test sets must have the same dimensions; got codes {x_train.shape[1]} "
                        f"vs {x_test.shape[1]}, factors {y_train.shape[1]} vs {y_test.shape[1]}.")
    _check_factors_vary(y_train, "DCI")
    rng = _numpy_rng(_default_key(key))
    importance = np.zeros((x_train.shape[1], y_train.shape[1]))
    train_acc, test_acc = [], []
    for k in range(y_train.shape[1]):
        model = GradientBoostingClassifier(random_state=int(rng.integers(2**31 - 1)))
        model.fit(x_train, y_train[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(x_train) == y_train[:, k]))
        test_acc.append(np.mean(model.predict(x_test) == y_test[:, k]))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def _importance_matrix(importance: ArrayLike) -> np.ndarray:
    r = np.asarray(importance, np.float64)
    if r.ndim != 2 or np.any(r < 0) or not np.all(np.isfinite(r)):
        raise DataError(f"an importance matrix must be a finite, non-negative [D, K] array, got shape {r.shape}.")
    return r


def dci_disentanglement(importance: ArrayLike) -> float:
    r"""DCI disentanglement of an importance matrix ``R [D, K]`` (Eastwood & Williams 2018, Sec. 2).

    .. math:: \sum_j \rho_j \left(1 - H_K\left(\frac{R_{j\cdot} + \epsilon}{\sum_k (R_{jk} + \epsilon)}
              \right)\right), \quad \rho_j = \frac{\sum_k R_{jk}}{\sum_{jk} R_{jk}}, \quad \epsilon = 10^{-11},

    with uniform weights :math:`\rho_j = 1/D` when ``R`` is all zero (disentanglement_lib's
    ``disentanglement``, ``dci.py``). Needs ``K >= 2``.
    """
    r = _importance_matrix(importance)
    if r.shape[1] < 2:
        raise DataError(f"DCI disentanglement uses an entropy in base K and needs K >= 2 factors, got {r.shape}.")
    return _weighted_specificity(r)


def _weighted_specificity(r: np.ndarray) -> float:
    """``sum_j rho_j (1 - H_K(P_j.))`` over the rows of ``r [D, K]`` (disentanglement; completeness on ``r.T``)."""
    per_row = 1.0 - _entropy(r + 1e-11, axis=1, base=r.shape[1])
    weights = np.ones_like(r) if r.sum() == 0.0 else r
    return float(np.sum(per_row * weights.sum(axis=1) / weights.sum()))


def dci_completeness(importance: ArrayLike) -> float:
    r"""DCI completeness of an importance matrix ``R [D, K]`` (Eastwood & Williams 2018, Sec. 2).

    .. math:: \sum_k \rho_k \left(1 - H_D\left(\frac{R_{\cdot k} + \epsilon}{\sum_j (R_{jk} + \epsilon)}
              \right)\right), \quad \rho_k = \frac{\sum_j R_{jk}}{\sum_{jk} R_{jk}}, \quad \epsilon = 10^{-11},

    with uniform weights when ``R`` is all zero (disentanglement_lib's ``completeness``). Needs ``D >= 2``.
    """
    r = _importance_matrix(importance)
    if r.shape[0] < 2:
        raise DataError(f"DCI completeness uses an entropy in base D and needs D >= 2 codes, got {r.shape}.")
    return _weighted_specificity(r.T)


def dci(train_codes: ArrayLike, train_factors: ArrayLike, test_codes: ArrayLike, test_factors: ArrayLike, *,
        key: Array | None = None) -> DCIScores:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018), as disentanglement_lib's
    ``dci.py``: :func:`gbt_importance` then :func:`dci_disentanglement` and :func:`dci_completeness` of its
    importance matrix; informativeness is the trees' mean accuracy on the train and test sets (the study uses
    10,000 / 5,000 points).
    """
    importance, train_acc, test_acc = gbt_importance(train_codes, train_factors, test_codes, test_factors,
                                                     key=key)
    return DCIScores(dci_disentanglement(importance), dci_completeness(importance), train_acc, test_acc)


# ----------------------------------------------------------------------------- modularity, explicitness


class ModularityExplicitness(NamedTuple):
    """Ridgeway & Mozer (2018) scores; explicitness is a mean ROC-AUC on the train and test sets."""

    modularity: float
    explicitness_train: float
    explicitness_test: float


def modularity(mutual_information: ArrayLike) -> float:
    r"""Modularity of a mutual-information matrix ``m [D, K]`` (Ridgeway & Mozer 2018, Sec. 3).

    .. math:: \frac1D \sum_j \left(1 - \frac{\sum_k m_{jk}^2 - \theta_j^2}{\theta_j^2 (K - 1)}\right),
              \quad \theta_j = \max_k m_{jk},

    a code with :math:`\theta_j = 0` counting 0 (disentanglement_lib's ``modularity``). Needs ``K >= 2``.
    """
    m = _importance_matrix(mutual_information)
    if m.shape[1] < 2:
        raise DataError(f"modularity compares each code's factors and needs K >= 2 factors, got {m.shape}.")
    squared = m**2
    top = squared.max(axis=1)  # [D]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - (squared.sum(axis=1) - top) / (top * (m.shape[1] - 1.0))
    return float(np.mean(np.where(top == 0.0, 0.0, score)))


def _explicitness(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray) -> tuple[float, float]:
    """Macro ROC-AUC on train and test of a logistic regression predicting one factor from all codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    classifier = LogisticRegression().fit(x_train, y_train)

    def auc(x: np.ndarray, y: np.ndarray) -> float:
        one_hot = (y[:, None] == classifier.classes_[None, :]).astype(np.int64)  # [N, C]
        present = (one_hot.sum(axis=0) > 0) & (one_hot.sum(axis=0) < one_hot.shape[0])
        return float(roc_auc_score(one_hot[:, present], classifier.predict_proba(x)[:, present]))

    return auc(x_train, y_train), auc(x_test, y_test)


def modularity_explicitness(train_codes: ArrayLike, train_factors: ArrayLike, test_codes: ArrayLike,
                            test_factors: ArrayLike, *, num_bins: int | None = 20) -> ModularityExplicitness:
    """Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib's
    ``modularity_explicitness.py`` (the study uses 20 bins and 10,000 / 5,000 points).

    Modularity: :func:`modularity` of the :func:`discrete_mutual_info` between the training codes, discretised
    into ``num_bins`` histogram bins per dimension (``None``: used as they are), and the training factors.
    Explicitness: per factor, ``sklearn.linear_model.LogisticRegression()`` (scikit-learn's defaults) predicts it
    from all codes standardised with the training mean and standard deviation; its one-vs-rest ROC-AUC,
    macro-averaged over the factor's values, is averaged over factors. A code dimension with zero training
    standard deviation is only centred (the reference would divide by zero).
    """
    x_train, y_train = _pair(train_codes, train_factors, "modularity_explicitness train")
    x_test, y_test = _pair(test_codes, test_factors, "modularity_explicitness test")
    if x_test.shape[1] != x_train.shape[1] or y_test.shape[1] != y_train.shape[1]:
        raise DataError("modularity_explicitness train and test sets must have the same dimensions; got codes "
                        f"{x_train.shape[1]} vs {x_test.shape[1]}, factors {y_train.shape[1]} vs "
                        f"{y_test.shape[1]}.")
    _check_factors_vary(y_train, "Explicitness")
    discrete = x_train if num_bins is None else discretize(x_train, num_bins)
    score = modularity(discrete_mutual_info(discrete, y_train))
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0.0, std, 1.0)
    z_train, z_test = (x_train - mean) / std, (x_test - mean) / std
    aucs = np.array([_explicitness(z_train, y_train[:, k], z_test, y_test[:, k]) for k in range(y_train.shape[1])])
    return ModularityExplicitness(score, float(aucs[:, 0].mean()), float(aucs[:, 1].mean()))


# ------------------------------------------------------------------------------ ground-truth data


class FactorData(GroundTruthData):
    """A :class:`GroundTruthData` from the factor sizes and a function ``observe(factors [N, K], key) -> x``.

    Example::

        w = np.random.default_rng(0).normal(size=(3, 16))
        data = FactorData((4, 5, 6), lambda y, key: (y / np.array([4, 5, 6])) @ w)
    """

    def __init__(self, factor_sizes: Sequence[int], observe: Callable[[np.ndarray, Array], ArrayLike]):
        sizes = tuple(int(s) for s in factor_sizes)
        if not sizes or any(s < 1 for s in sizes) or any(s != t for s, t in zip(sizes, factor_sizes)):
            raise ConfigError(f"factor_sizes must be a non-empty sequence of positive integers, got "
                              f"{factor_sizes!r}.")
        self._factor_sizes = sizes
        self._observe = observe

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return self._factor_sizes

    def observations(self, factors: np.ndarray, key: Array) -> ArrayLike:
        return self._observe(factors, key)


class DatasetFactors(GroundTruthData):
    """The :class:`GroundTruthData` of a dataset that holds one example for every combination of its factors.

    ``observations [N, ...]`` and ``factors [N, K]`` (integer classes ``0..S_k - 1``) are all the examples of a
    dataset generated on a full factor grid, in any order (e.g. the train, valid and test splits of
    ``dsprites`` concatenated: :meth:`from_dataset`). Factors that take a single value (dSprites' color) are
    dropped, as disentanglement_lib's ``dsprites_full`` does: they carry no information and make MIG's
    normalising entropy zero. :meth:`observations` looks examples up by their factor combination; a combination
    that occurs several times gives its first example.
    """

    def __init__(self, observations: np.ndarray, factors: ArrayLike, factor_sizes: Sequence[int], *,
                 factor_names: Sequence[str] | None = None):
        factors = np.asarray(factors)
        sizes = tuple(int(s) for s in factor_sizes)
        if factors.ndim != 2 or factors.shape[1] != len(sizes) or factors.shape[0] != len(observations):
            raise DataError(f"factors must be [N, K] with N = {len(observations)} observations and K = "
                            f"{len(sizes)} factor sizes, got shape {factors.shape}.")
        if not np.issubdtype(factors.dtype, np.integer) or (factors.size and (
                np.any(factors.min(axis=0) < 0) or np.any(factors.max(axis=0) >= np.asarray(sizes)))):
            raise DataError(f"factors must hold integer classes 0..size-1 for the sizes {sizes}.")
        names = tuple(factor_names) if factor_names is not None else tuple(f"factor{k}" for k in range(len(sizes)))
        keep = [k for k, s in enumerate(sizes) if s > 1]
        if not keep:
            raise DataError(f"every factor takes a single value (sizes {sizes}); there is nothing to disentangle.")
        self._factor_sizes = tuple(sizes[k] for k in keep)
        self.factor_names = tuple(names[k] for k in keep)
        flat = np.ravel_multi_index(tuple(factors[:, k] for k in keep), self._factor_sizes)  # [N]
        table = np.full(math.prod(self._factor_sizes), -1, np.int64)
        table[flat[::-1]] = np.arange(len(flat))[::-1]  # the first example of each combination wins
        missing = int(np.sum(table < 0))
        if missing:
            raise DataError(f"{missing:,} of the {table.size:,} combinations of the factors {self.factor_names} "
                            f"(sizes {self._factor_sizes}) have no example; the BetaVAE and FactorVAE scores draw "
                            "observations for any combination, so they need a dataset generated on the full grid "
                            "(e.g. dsprites). The code-based metrics (MIG, SAP, DCI, modularity) can run on "
                            "(codes, factors) pairs directly.")
        self._observations = observations
        self._table = table

    @classmethod
    def from_dataset(cls, dataset: Any) -> DatasetFactors:
        """All splits of a :class:`jaxvae.data.Dataset` with ground-truth factors, as one grid."""
        if dataset.factors is None:
            raise DataError(f"{dataset.name} has no ground-truth factors; disentanglement metrics need a dataset "
                            "generated from known factors, such as dsprites or dsprites-small.")
        splits = [s for s in ("train", "valid", "test") if len(dataset.split(s))]
        return cls(np.concatenate([dataset.split(s) for s in splits]),
                   np.concatenate([dataset.factors[s] for s in splits]), dataset.factor_sizes,
                   factor_names=dataset.factor_names)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return self._factor_sizes

    def observations(self, factors: np.ndarray, key: Array | None = None) -> np.ndarray:
        factors = np.asarray(factors)
        index = self._table[np.ravel_multi_index(tuple(factors.T), self._factor_sizes)]
        return np.asarray(self._observations[index])


def _represent(representation_fn: RepresentationFn, data: GroundTruthData, factors: np.ndarray, key: Array,
               chunk_size: int) -> np.ndarray:
    """Codes ``[M, D]`` of observations of ``factors [M, K]``, encoded ``chunk_size`` at a time.

    Every call sees the same batch size (the last chunk is padded by repeating its last row), so a jitted
    ``representation_fn`` compiles once; chunk ``i`` draws its observations with ``fold_in(key, i)``.
    """
    m = factors.shape[0]
    size = min(chunk_size, m)
    parts = []
    for i, start in enumerate(range(0, m, size)):
        chunk = factors[start:start + size]
        n = chunk.shape[0]
        if n < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)])
        codes = np.asarray(representation_fn(data.observations(chunk, jax.random.fold_in(key, i))), np.float64)
        if codes.ndim != 2 or codes.shape[0] != size:
            raise DataError(f"representation_fn must return codes [batch, D] for a batch of {size} observations, "
                            f"got shape {codes.shape}.")
        parts.append(codes[:n])
    return np.concatenate(parts)


def sample_codes(representation_fn: RepresentationFn, data: GroundTruthData, key: Array, num_points: int, *,
                 chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` factor vectors drawn from ``data`` and the codes of their observations.

    The counterpart of disentanglement_lib's ``generate_batch_factor_code``; ``representation_fn`` maps a batch
    of observations ``[B, ...]`` to codes ``[B, D]`` (e.g. posterior means) and is called on ``chunk_size``
    observations at a time.

    Returns:
      ``(codes [num_points, D] float64, factors [num_points, K] int64)``.
    """
    _check_positive("num_points", num_points)
    _check_positive("chunk_size", chunk_size)
    key_factors, key_obs = jax.random.split(key)
    factors = np.asarray(data.sample_factors(key_factors, num_points), np.int64)
    return _represent(representation_fn, data, factors, key_obs, chunk_size), factors


def _factor_batches(data: GroundTruthData, key: Array, num_points: int, batch_size: int) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """A uniformly drawn factor index per point and ``[num_points, batch_size, K]`` independent factors."""
    key_index, key_factors = jax.random.split(key)
    index = _numpy_rng(key_index).integers(data.num_factors, size=num_points)  # [n]
    factors = np.asarray(data.sample_factors(key_factors, num_points * batch_size), np.int64)
    return index, factors.reshape(num_points, batch_size, data.num_factors)


# ----------------------------------------------------------------------------------------- BetaVAE score


class BetaVAEScore(NamedTuple):
    """Accuracy of the BetaVAE metric's linear classifier on its training and evaluation points."""

    train_accuracy: float
    eval_accuracy: float


def _beta_vae_points(representation_fn: RepresentationFn, data: GroundTruthData, key: Array, batch_size: int,
                     num_points: int, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """BetaVAE-metric features ``[n, D]`` (mean absolute code difference over ``batch_size`` pairs) and labels."""
    key_first, key_second, key_obs1, key_obs2 = jax.random.split(key, 4)
    labels, first = _factor_batches(data, key_first, num_points, batch_size)  # [n], [n, B, K]
    second = np.asarray(data.sample_factors(key_second, num_points * batch_size), np.int64)
    second = second.reshape(first.shape)
    rows = np.arange(num_points)
    second[rows, :, labels] = first[rows, :, labels]  # factor `label` is shared within each pair
    k = data.num_factors
    z1 = _represent(representation_fn, data, first.reshape(-1, k), key_obs1, chunk_size)
    z2 = _represent(representation_fn, data, second.reshape(-1, k), key_obs2, chunk_size)
    features = np.mean(np.abs(z1 - z2).reshape(num_points, batch_size, -1), axis=1)  # [n, D]
    return features, labels


def beta_vae_score(representation_fn: RepresentationFn, data: GroundTruthData, key: Array, *,
                   batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                   chunk_size: int = 1024) -> BetaVAEScore:
    r"""The BetaVAE disentanglement metric (Higgins et al. 2017), as disentanglement_lib's
    ``compute_beta_vae_sklearn`` (``beta_vae.py``) with the study's settings as defaults.

    Each of ``num_train`` training points draws a factor index ``k`` uniformly and ``batch_size`` pairs of factor
    vectors, independent except that factor ``k`` is copied from the first of each pair to the second; its
    feature is :math:`\frac1B \sum_b |z(x^{(1)}_b) - z(x^{(2)}_b)|` ``[D]`` and its label ``k``. A
    ``sklearn.linear_model.LogisticRegression`` (scikit-learn's defaults, ``random_state`` from the key) is
    fitted to them and scored on ``num_eval`` fresh points. Chance level is about ``1/K``.

    Args:
      representation_fn: observations ``[B, ...]`` -> codes ``[B, D]`` (e.g. posterior means).
      data: the ground-truth factors and observations.
      key: drives all sampling (training points with ``fold_in(key, 0)``, evaluation with ``fold_in(key, 1)``).
      batch_size: pairs averaged into one point (64 in the study).
      num_train: training points (10,000 in the study).
      num_eval: evaluation points (5,000 in the study).
      chunk_size: observations per call of ``representation_fn``.
    """
    from sklearn.linear_model import LogisticRegression

    for name, value in (("batch_size", batch_size), ("num_train", num_train), ("num_eval", num_eval),
                        ("chunk_size", chunk_size)):
        _check_positive(name, value)
    x_train, y_train = _beta_vae_points(representation_fn, data, jax.random.fold_in(key, 0), batch_size,
                                        num_train, chunk_size)
    x_eval, y_eval = _beta_vae_points(representation_fn, data, jax.random.fold_in(key, 1), batch_size,
                                      num_eval, chunk_size)
    model = LogisticRegression(random_state=_sklearn_seed(jax.random.fold_in(key, 2)))
    model.fit(x_train, y_train)
    return BetaVAEScore(float(np.mean(model.predict(x_train) == y_train)),
                        float(np.mean(model.predict(x_eval) == y_eval)))


# --------------------------------------------------------------------------------------- FactorVAE score


class FactorVAEScore(NamedTuple):
    """Accuracy of the FactorVAE metric's majority-vote classifier and the number of unpruned code dimensions."""

    train_accuracy: float
    eval_accuracy: float
    num_active_dims: int


def _factor_vae_votes(representation_fn: RepresentationFn, data: GroundTruthData, key: Array, batch_size: int,
                      num_points: int, global_variances: np.ndarray, active: np.ndarray,
                      chunk_size: int) -> np.ndarray:
    """Votes ``[K, D]``: for each point, (fixed factor, active code dimension of least normalised variance)."""
    key_factors, key_obs = jax.random.split(key)
    index, factors = _factor_batches(data, key_factors, num_points, batch_size)  # [n], [n, B, K]
    rows = np.arange(num_points)
    factors[rows, :, index] = factors[rows, :1, index]  # factor `index` fixed across the batch
    codes = _represent(representation_fn, data, factors.reshape(-1, data.num_factors), key_obs, chunk_size)
    local = np.var(codes.reshape(num_points, batch_size, -1), axis=1, ddof=1)  # [n, D]
    active_dims = np.flatnonzero(active)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = local[:, active_dims] / global_variances[active_dims]  # [n, D_active]
    chosen = active_dims[np.argmin(ratio, axis=1)]  # [n]
    votes = np.zeros((data.num_factors, global_variances.shape[0]), np.int64)
    np.add.at(votes, (index, chosen), 1)
    return votes


def factor_vae_score(representation_fn: RepresentationFn, data: GroundTruthData, key: Array, *,
                     batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                     num_variance_estimate: int = 10000, prune_threshold: float = 0.05,
                     chunk_size: int = 1024) -> FactorVAEScore:
    """The FactorVAE disentanglement metric (Kim & Mnih 2018), as disentanglement_lib's ``compute_factor_vae``
    (``factor_vae.py``) with the study's settings (``factor_vae_metric.gin``) as defaults.

    1. The global variance of each code dimension is estimated (``ddof=1``) on ``num_variance_estimate``
       observations; dimensions with standard deviation below ``prune_threshold`` are pruned as collapsed
       (0.05 in the study; the reference function's own default is 0). No active dimension gives scores 0.
    2. Each point draws a factor index ``k`` uniformly, fixes factor ``k`` across ``batch_size`` otherwise
       independent factor vectors, and votes for ``(k, argmin_j Var_batch(z_j) / Var_global(z_j))`` over the
       active dimensions (the variance of each dimension after dividing it by its global standard deviation).
    3. The classifier maps each code dimension to its most-voted factor (majority vote over ``num_train``
       points); the scores are its accuracies on the training votes and on ``num_eval`` fresh points. Chance
       level is about ``1/K``.

    ``key`` drives all sampling (variances, training and evaluation points with ``fold_in(key, 0/1/2)``).
    """
    for name, value in (("num_train", num_train), ("num_eval", num_eval), ("chunk_size", chunk_size)):
        _check_positive(name, value)
    _check_positive("batch_size", batch_size, minimum=2)
    _check_positive("num_variance_estimate", num_variance_estimate, minimum=2)
    if not prune_threshold >= 0.0:
        raise ConfigError(f"prune_threshold must be >= 0, got {prune_threshold!r}.")
    codes, _ = sample_codes(representation_fn, data, jax.random.fold_in(key, 0), num_variance_estimate,
                            chunk_size=chunk_size)
    global_variances = np.var(codes, axis=0, ddof=1)  # [D]
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return FactorVAEScore(0.0, 0.0, 0)
    train_votes = _factor_vae_votes(representation_fn, data, jax.random.fold_in(key, 1), batch_size, num_train,
                                    global_variances, active, chunk_size)
    eval_votes = _factor_vae_votes(representation_fn, data, jax.random.fold_in(key, 2), batch_size, num_eval,
                                   global_variances, active, chunk_size)
    classifier = np.argmax(train_votes, axis=0)  # [D]: the majority factor of each code dimension
    columns = np.arange(train_votes.shape[1])
    train_accuracy = train_votes[classifier, columns].sum() / train_votes.sum()
    eval_accuracy = eval_votes[classifier, columns].sum() / eval_votes.sum()
    return FactorVAEScore(float(train_accuracy), float(eval_accuracy), int(active.sum()))


# ------------------------------------------------------------------------------------------- compute_all


def compute_all(representation_fn: RepresentationFn, data: GroundTruthData, key: Array, *,
                metrics: Sequence[str] = METRICS, num_train: int = 10000, num_test: int = 5000,
                num_bins: int = 20, continuous_factors: bool = False, batch_size: int = 64,
                num_variance_estimate: int = 10000, prune_threshold: float = 0.05,
                chunk_size: int = 1024) -> dict[str, float]:
    """Every metric of this module with disentanglement_lib's study settings as defaults, as a flat dict.

    MIG, SAP, DCI and modularity/explicitness share one training set of ``num_train`` points and one test set of
    ``num_test`` points drawn with :func:`sample_codes` (``fold_in(key, 0)`` and ``fold_in(key, 1)``); the
    BetaVAE and FactorVAE scores use ``num_train`` training and ``num_test`` evaluation points of ``batch_size``
    observations each (``fold_in(key, 2)`` and ``fold_in(key, 3)``). ``metrics`` picks a subset of
    :data:`METRICS`.

    Returns:
      ``{"mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness_train",
      "dci_informativeness_test", "modularity", "explicitness_train", "explicitness_test",
      "beta_vae_train_accuracy", "beta_vae_score", "factor_vae_train_accuracy", "factor_vae_score",
      "factor_vae_num_active_dims"}`` restricted to the chosen metrics; the two ``*_score`` entries are
      evaluation accuracies.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown disentanglement metrics {unknown}; choose from {list(METRICS)}.")
    chosen = set(metrics)
    out: dict[str, float] = {}
    if chosen & {"mig", "sap", "dci", "modularity_explicitness"}:
        train = sample_codes(representation_fn, data, jax.random.fold_in(key, 0), num_train,
                             chunk_size=chunk_size)
        test = sample_codes(representation_fn, data, jax.random.fold_in(key, 1), num_test,
                            chunk_size=chunk_size)
        if "mig" in chosen:
            out["mig"] = mig(*train, num_bins=num_bins)
        if "sap" in chosen:
            out["sap"] = sap(*train, *test, continuous_factors=continuous_factors, key=jax.random.fold_in(key, 4))
        if "dci" in chosen:
            scores = dci(*train, *test, key=jax.random.fold_in(key, 5))
            out.update({f"dci_{name}": value for name, value in scores._asdict().items()})
        if "modularity_explicitness" in chosen:
            out.update(modularity_explicitness(*train, *test, num_bins=num_bins)._asdict())
    if "beta_vae" in chosen:
        beta = beta_vae_score(representation_fn, data, jax.random.fold_in(key, 2), batch_size=batch_size,
                              num_train=num_train, num_eval=num_test, chunk_size=chunk_size)
        out["beta_vae_train_accuracy"], out["beta_vae_score"] = beta
    if "factor_vae" in chosen:
        factor = factor_vae_score(representation_fn, data, jax.random.fold_in(key, 3), batch_size=batch_size,
                                  num_train=num_train, num_eval=num_test,
                                  num_variance_estimate=num_variance_estimate, prune_threshold=prune_threshold,
                                  chunk_size=chunk_size)
        out["factor_vae_train_accuracy"], out["factor_vae_score"] = factor.train_accuracy, factor.eval_accuracy
        out["factor_vae_num_active_dims"] = float(factor.num_active_dims)
    return {name: float(value) for name, value in out.items()}
