"""The models: the protocol every family goes through (:mod:`~jaxvae.models.protocol`), the families
(single-layer, hierarchical, top-down, autoregressive, recurrent, conditional), their networks, priors,
posteriors and flows, and the factory from a config to a model.

Every name loads on first use (:mod:`jaxvae._lazy`)."""

from __future__ import annotations

from jaxvae._lazy import attach

_EXPORTS = {
    "protocol": (
        "Model",
        "ModelOutput",
        "PureModel",
        "PureVAE",
        "VAE",
        "count_params",
        "flatten_latents",
        "flatten_posteriors",
        "merge_trees",
        "params_dtype",
        "partition_tree",
        "set_mode",
        "split",
        "unflatten_latents",
    ),
}
_SUBMODULES = ("autoregressive", "conditional", "convops", "factory", "flows", "hierarchy", "inits", "nets",
               "nn", "posteriors", "priors", "protocol", "recurrent", "topdown")

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, _SUBMODULES)
