r"""The maximum mean discrepancy between two samples (Gretton et al. 2012), with the kernels InfoVAE/WAE use.

Used by the InfoVAE objective (:func:`jaxvae.objectives.info_vae`) and by the aggregate-posterior diagnostics
(:func:`jaxvae.evaluation.diagnostics.aggregate_prior_mmd`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

KERNELS = ("imq", "rbf")


def check_kernel(kernel: str) -> None:
    """Raises ``ValueError`` for a kernel name not in :data:`KERNELS`."""
    if kernel not in KERNELS:
        raise ValueError(f"Unknown MMD kernel {kernel!r}; choose one of {KERNELS}.")


def _kernel_matrix(a: Array, b: Array, kernel: str, scale: float | Array) -> Array:
    """``k(a_i, b_j)``, ``[N, M]``, from exact squared distances (no ``|a|^2 + |b|^2 - 2ab`` cancellation)."""
    sq = jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)  # [N, M]
    if kernel == "rbf":
        return jnp.exp(-sq / (2.0 * jnp.square(scale)))
    c = 2.0 * a.shape[-1] * jnp.square(scale)
    return c / (c + sq)


def mmd(x: Array, y: Array, *, kernel: str = "imq", scale: float | Array = 1.0) -> Array:
    r"""Unbiased estimate of the squared maximum mean discrepancy between two samples (Gretton et al. 2012).

    .. math::
        \widehat{\mathrm{MMD}}^2 = \frac{1}{N(N-1)} \sum_{i \ne j} k(x_i, x_j)
          + \frac{1}{M(M-1)} \sum_{i \ne j} k(y_i, y_j) - \frac{2}{NM} \sum_{i, j} k(x_i, y_j)

    a U-statistic: its expectation is the population :math:`\mathrm{MMD}^2`, so it is zero on average (and can be
    slightly negative) when both samples come from the same distribution. Kernels, with :math:`s` = ``scale``:

    * ``"rbf"``: :math:`k(a, b) = \exp(-\|a - b\|^2 / (2 s^2))`;
    * ``"imq"``: inverse multiquadratic :math:`k(a, b) = C / (C + \|a - b\|^2)` with :math:`C = 2 D s^2`
      (Tolstikhin et al. 2018, "Wasserstein Auto-Encoders", who use :math:`C = 2 D \sigma_p^2` for a prior of
      variance :math:`\sigma_p^2`; :math:`s = 1` suits the standard normal prior). Its heavy tails keep
      gradients alive for distant samples.

    Args:
      x: ``[N, D]``, ``N >= 2``.
      y: ``[M, D]``, ``M >= 2``.
      kernel: ``"imq"`` or ``"rbf"``.
      scale: :math:`s > 0`.

    Returns:
      The scalar estimate.
    """
    check_kernel(kernel)
    if isinstance(scale, (int, float)) and not scale > 0:
        raise ValueError(f"MMD kernel scale must be > 0, got {scale!r}.")
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"The unbiased MMD needs at least 2 samples on each side, got {n} and {m}.")
    kxx = jnp.where(jnp.eye(n, dtype=bool), 0.0, _kernel_matrix(x, x, kernel, scale))
    kyy = jnp.where(jnp.eye(m, dtype=bool), 0.0, _kernel_matrix(y, y, kernel, scale))
    kxy = _kernel_matrix(x, y, kernel, scale)
    return jnp.sum(kxx) / (n * (n - 1)) + jnp.sum(kyy) / (m * (m - 1)) - 2.0 * jnp.mean(kxy)
