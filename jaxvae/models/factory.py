"""From a :class:`~jaxvae.config.Config` to a model: the factories of the likelihoods, priors, networks and
hierarchies declared in :mod:`jaxvae.catalog`, the model builder (built-in or the user's ``MODULE:FUNCTION``)
and the pure model. Each is a small pure function of the config and of what only the data knows (the event
shape)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from jaxvae.catalog import (
    INFERENCE,
    LIKELIHOODS,
    NETWORKS,
    PRIORS,
)
from jaxvae.config import Config, is_builder_reference
from jaxvae.distributions import likelihoods
from jaxvae.errors import ConfigError
from jaxvae.models import autoregressive, hierarchy, inits, posteriors, priors, topdown
from jaxvae.models.protocol import VAE, Model, PureModel, set_mode

Array = jax.Array


def _scale(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # "learned", "per_pixel", "optimal"


for _name in likelihoods.names():
    LIKELIHOODS.implement(_name)(lambda cfg, _name=_name: likelihoods.get(_name))
del _name
LIKELIHOODS.implement("categorical")(lambda cfg: likelihoods.get("categorical", num_classes=cfg.model.num_classes))
LIKELIHOODS.implement("gaussian")(
    lambda cfg: likelihoods.get("gaussian", sigma=_scale(cfg.model.likelihood_scale)))
LIKELIHOODS.implement("laplace")(lambda cfg: likelihoods.get("laplace", scale=_scale(cfg.model.likelihood_scale)))
LIKELIHOODS.implement("discretized_logistic_mixture")(
    lambda cfg: likelihoods.get("discretized_logistic_mixture", num_mixtures=cfg.model.num_mixtures))


def build_likelihood(cfg: Config) -> likelihoods.Likelihood:
    """The decoder's likelihood of ``model.likelihood`` (:data:`LIKELIHOODS`)."""
    return LIKELIHOODS[cfg.model.likelihood](cfg)


# A model builder is ``(event_shape, latent_dim, likelihood, rngs) -> Model``: the signature of user builders
# given as `model.network=MODULE:FUNCTION` or `jv.fit(..., model=builder)`.
ModelBuilder = Callable[..., Model]

# Built-in priors and networks: `model.prior` / `model.network` (the config validates against these registries).
PRIORS.implement("standard_normal")(
    lambda cfg, event_shape, rngs: priors.StandardNormal(cfg.model.latent_dim))
PRIORS.implement("learned_gaussian")(
    lambda cfg, event_shape, rngs: priors.LearnedGaussian(cfg.model.latent_dim))
PRIORS.implement("mixture")(lambda cfg, event_shape, rngs: priors.MixtureOfGaussians(
    cfg.model.latent_dim, cfg.model.prior_components, rngs=rngs))
PRIORS.implement("vamp")(lambda cfg, event_shape, rngs: priors.VampPrior(
    cfg.model.latent_dim, cfg.model.prior_components, event_shape,
    init_mean=127.5 if cfg.data.scale == "uint8" else 0.5,
    init_scale=0.05 * (255.0 if cfg.data.scale == "uint8" else 1.0), rngs=rngs))



def _committed(cfg: Config, vae: VAE) -> VAE:
    """``model.committed_rate``: the encoder's posterior with the scale that commits that rate."""
    if cfg.model.committed_rate:
        vae.encoder = posteriors.CommittedRate(vae.encoder, cfg.model.committed_rate)
    return vae


def _pixelcnn(cfg: Config, event_shape, likelihood, prior, rngs) -> VAE:
    m, p = cfg.model, cfg.model.pixelcnn
    if len(event_shape) != 3 or (m.network == "conv" and (event_shape[0] % 4 or event_shape[1] % 4)):
        need = "H and W divisible by 4 for model.network=conv" if len(event_shape) == 3 else "images (H, W, C)"
        raise ConfigError(f"model.decoder=pixelcnn needs {need}; the data has event shape {tuple(event_shape)}. "
                          "Use model.decoder=factorized for other data.")
    return _committed(cfg, autoregressive.AutoregressiveVAE.pixelcnn(
        event_shape, m.latent_dim, likelihood, network=m.network, hidden=m.hidden, channels=m.channels,
        conv_hidden=m.conv_hidden, activation=m.activation, conv_impl=m.conv_impl, prior=prior,
        posterior=m.posterior, flow_steps=m.flow_steps, iaf_hidden=m.iaf_hidden, householder=m.householder,
        features=p.features, layers=p.layers, kernel_size=p.kernel_size, cond_features=p.cond_features,
        rngs=rngs))


def _gru(cfg: Config, event_shape, likelihood, prior, rngs) -> VAE:
    from jaxvae.models import recurrent

    m, r = cfg.model, cfg.model.rnn
    if len(event_shape) != 1:
        raise ConfigError(f"model.decoder=gru models token sequences [L]; the data has event shape "
                          f"{tuple(event_shape)}. Use a text dataset (data.name=words) or another decoder.")
    return _committed(cfg, recurrent.RecurrentVAE.gru(
        event_shape[0], m.latent_dim, likelihood, embed=r.embed, hidden=r.hidden, encoder_hidden=r.encoder_hidden,
        word_dropout=r.word_dropout, prior=prior, rngs=rngs))


@NETWORKS.implement("mlp")
def _mlp(cfg: Config, event_shape, likelihood, prior, rngs) -> VAE:
    m = cfg.model
    if m.decoder == "pixelcnn":
        return _pixelcnn(cfg, event_shape, likelihood, prior, rngs)
    if m.decoder == "gru":
        return _gru(cfg, event_shape, likelihood, prior, rngs)
    return _committed(cfg, VAE.mlp(
        event_shape, m.latent_dim, likelihood, hidden=m.hidden, activation=m.activation, prior=prior,
        posterior=m.posterior, flow_steps=m.flow_steps, iaf_hidden=m.iaf_hidden, householder=m.householder,
        rngs=rngs))


@NETWORKS.implement("conv")
def _conv(cfg: Config, event_shape, likelihood, prior, rngs) -> VAE:
    m = cfg.model
    if m.decoder == "pixelcnn":
        return _pixelcnn(cfg, event_shape, likelihood, prior, rngs)
    if len(event_shape) != 3 or event_shape[0] % 4 or event_shape[1] % 4:
        raise ConfigError(f"model.network=conv needs images (H, W, C) with H and W divisible by 4; the data has "
                          f"event shape {event_shape}. Use model.network=mlp.")
    return _committed(cfg, VAE.conv(event_shape, m.latent_dim, likelihood, channels=m.channels,
                                    hidden=m.conv_hidden, activation=m.activation, conv_impl=m.conv_impl,
                                    prior=prior, rngs=rngs))


# model.inference for model.network=hierarchical: (cfg, event_shape, likelihood, rngs) -> a hierarchy.


def _mlp_hierarchy(cls: type) -> Callable[..., Model]:
    def build(cfg: Config, event_shape, likelihood, rngs) -> Model:
        m = cfg.model
        return cls(event_shape, m.latent_dims, likelihood, hidden=m.layer_hidden or None, depth=m.layer_depth,
                   activation=m.activation, log_scale_clamp=m.log_scale_clamp or None, rngs=rngs)
    return build


INFERENCE.implement("bottom_up")(_mlp_hierarchy(hierarchy.BottomUpVAE))
INFERENCE.implement("ladder")(_mlp_hierarchy(hierarchy.LadderVAE))


@INFERENCE.implement("top_down")
def _top_down(cfg: Config, event_shape, likelihood, rngs) -> Model:
    m = cfg.model
    if len(event_shape) != 3 or event_shape[0] % 4 or event_shape[1] % 4:
        raise ConfigError(f"model.inference=top_down needs images (H, W, C) with H and W divisible by 4; the data "
                          f"has event shape {tuple(event_shape)}. Use model.inference=bottom_up or ladder.")
    return topdown.TopDownVAE(event_shape, m.latent_dims, likelihood, groups_per_scale=m.groups_per_scale or None,
                              channels=m.residual_channels, cells=m.cells, activation=m.activation,
                              log_scale_clamp=m.log_scale_clamp or None, conv_impl=m.conv_impl, rngs=rngs)


@NETWORKS.implement("hierarchical")
def _hierarchical(cfg: Config, event_shape, likelihood, prior, rngs) -> Model:
    del prior  # a hierarchy's top layer has a standard normal prior (config.validate says so)
    return INFERENCE[cfg.model.inference](cfg, event_shape, likelihood, rngs)


def _conditional(cfg: Config, event_shape, likelihood, rngs) -> Model:
    """``model.conditional``: the conditional VAE or M2 of :mod:`jaxvae.models.conditional` (MLP networks)."""
    from jaxvae.models import conditional

    m = cfg.model
    if m.conditional == "cvae":
        return conditional.ConditionalVAE(event_shape, m.latent_dim, likelihood, m.condition_classes,
                                          hidden=m.hidden, activation=m.activation, rngs=rngs)
    return conditional.M2VAE(event_shape, m.latent_dim, likelihood, m.condition_classes,
                             alpha=m2_alpha(cfg), hidden=m.hidden, activation=m.activation, rngs=rngs)


def m2_alpha(cfg: Config, num_train: int | None = None) -> float:
    """``model.m2_alpha``, or its default ``0.1 * N / N_labelled`` (Kingma et al. 2014's ``alpha = 0.1 N`` for
    a classifier loss averaged over the labelled examples; ``N``: the training examples), which needs ``N``
    (:func:`jaxvae.runs.setup_run` records it in the config as ``model.m2_alpha`` is resolved)."""
    m = cfg.model
    if m.m2_alpha:
        return m.m2_alpha
    if num_train is None or not cfg.data.labels_per_class:
        return 0.1  # every example labelled: N_labelled = N
    return 0.1 * num_train / (cfg.data.labels_per_class * m.condition_classes)


def builder_reference(builder: ModelBuilder) -> str:
    """``"MODULE:QUALNAME"`` of a builder function, as recorded in ``config.json``."""
    return f"{builder.__module__}:{builder.__qualname__}"


def reference_is_importable(builder: ModelBuilder) -> bool:
    """Whether :func:`resolve_builder` of the builder's reference finds this very function again (not true for
    lambdas, local functions or functions defined in ``__main__``)."""
    try:
        return resolve_builder(builder_reference(builder)) is builder
    except ConfigError:
        return False


def resolve_builder(reference: str, key: str = "model.network",
                    signature: str = "(event_shape, latent_dim, likelihood, rngs) -> model") -> ModelBuilder:
    """Imports the builder named ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted, e.g. ``Class.method``) from
    the working directory or ``PYTHONPATH``; a missing module or function is a :class:`ConfigError` naming the
    config ``key`` that holds the reference."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}={reference!r}: a user function is given as MODULE:FUNCTION, e.g. "
                          f"{key}=mymodule:build (mymodule.py in the working directory or on PYTHONPATH).")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # the console script does not put the working directory on the path
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        path = module_name.replace(".", "/")
        raise ConfigError(f"{key}={reference!r}: cannot import module {module_name!r} ({e}). Run from "
                          f"the folder that holds {path}.py or add it to PYTHONPATH.") from None
    if "<" in attr:
        raise ConfigError(f"{key}={reference!r} was a lambda or a local function, which cannot be "
                          "imported again: reopen the run from Python (jv.load_run(workdir, ...) with the "
                          "function), "
                          "or define it at the top level of a module.")
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}={reference!r}: module {module_name!r} ({module.__file__}) has no "
                              f"{attr!r}; it may have been renamed or removed since the run was created.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{key}={reference!r} is a {type(obj).__name__}, not a function "
                          f"{signature}.")
    return obj


def model_builder(cfg: Config, event_shape: tuple[int, ...], builder: ModelBuilder | None = None, *,
                  training: bool = False) -> Callable[[nnx.Rngs], Model]:
    """A function ``rngs -> Model`` for the configured architecture and data shape.

    ``training``: the module in NNX's training mode, as built (what the objective trains); else in evaluation
    mode (:func:`jaxvae.models.protocol.set_mode`: ``deterministic=True``, so no word dropout,
    ``model.rnn.word_dropout``, and no ``nnx.Dropout`` of a user's model). Both have the same parameters.

    ``builder`` (a user function ``(event_shape, latent_dim, likelihood, rngs) -> Model``) takes precedence;
    otherwise ``model.network`` is a built-in name (:data:`NETWORKS`, with ``model.prior`` from :data:`PRIORS`)
    or a ``MODULE:FUNCTION`` reference to such a function. ``model.init`` other than ``flax`` redraws the dense
    and convolutional layers' weights afterwards (:func:`jaxvae.models.inits.reinitialize`).
    """
    build = _module_builder(cfg, tuple(event_shape), builder)
    return build if training else lambda rngs: set_mode(build(rngs), training=False)


def _module_builder(cfg: Config, event_shape: tuple[int, ...], builder: ModelBuilder | None
                    ) -> Callable[[nnx.Rngs], Model]:
    m = cfg.model
    likelihood = build_likelihood(cfg)
    event_shape = tuple(event_shape)
    if builder is None and is_builder_reference(m.network):
        builder = resolve_builder(m.network)
    if builder is not None:
        user = builder
        build = lambda rngs: user(event_shape, m.latent_dim, likelihood, rngs)
    elif m.conditional != "none":
        build = lambda rngs: _conditional(cfg, event_shape, likelihood, rngs)
    else:
        network = NETWORKS[m.network]
        make_prior = PRIORS[m.prior]
        build = lambda rngs: network(cfg, event_shape, likelihood, make_prior(cfg, event_shape, rngs), rngs)
    if m.init == "flax":
        return build
    return lambda rngs: inits.reinitialize(build(rngs), m.init, rngs)  # model.init: jaxvae.models.inits


def build_model(cfg: Config, event_shape: tuple[int, ...], builder: ModelBuilder | None = None, *,
                training: bool = False) -> PureModel:
    """The pure model for ``cfg`` and the data's event shape (no parameters allocated); see
    :func:`model_builder`. Its evaluation view (:meth:`~jaxvae.models.protocol.PureModel.evaluation`), or with
    ``training`` the training view, what the objective trains; either has the other as
    :meth:`~jaxvae.models.protocol.PureModel.training` / :meth:`~jaxvae.models.protocol.PureModel.evaluation`."""
    return PureModel.from_builder(model_builder(cfg, tuple(event_shape), builder, training=training))


def build_training_model(cfg: Config, model: PureModel, event_shape: tuple[int, ...],
                         builder: ModelBuilder | None = None) -> PureModel:
    """The model the objective trains: ``model.training()`` (word dropout and users' ``nnx.Dropout`` on; the same
    parameters). ``cfg``, ``event_shape`` and ``builder`` are no longer needed (kept for existing callers)."""
    del cfg, event_shape, builder
    return model.training()
