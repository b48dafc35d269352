"""From a :class:`~jaxvae.config.Config` to the pure pieces: model, optimizer, objective.

Each builder is a small pure function of the config (plus what only the data knows: the event shape, the number
of steps), so the training loop contains no construction logic and a researcher can reuse any piece alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxvae.config import Config, is_builder_reference
from jaxvae.distributions import likelihoods
from jaxvae.errors import ConfigError
from jaxvae.models import autoregressive, hierarchy, inits, posteriors, priors, topdown
from jaxvae.models.protocol import VAE, Model, PureModel, set_mode
from jaxvae.objectives import controllers, estimators, regularizers, schedules
from jaxvae.objectives import losses as objectives
from jaxvae.objectives.losses import Objective
from jaxvae.training import step as train_lib
from jaxvae.training.program import Program

Array = jax.Array
T = TypeVar("T")
# A user's training program: (cfg, model, objective, optimizer) -> jaxvae.training.Program (train.program).
ProgramBuilder = Callable[[Config, PureModel, Objective, optax.GradientTransformation], Program]


@dataclasses.dataclass(frozen=True)
class Spec(Generic[T]):
    """One registered component: its constructor and what the rest of the engine needs to know about it."""

    build: T
    doc: str = ""
    controllable: bool = False  # objectives: a KL controller may set their beta
    needs_factorized_prior: bool = False  # objectives: need a KL per latent dimension
    factorized: bool = False  # priors: a product over dimensions (a KL per dimension exists)
    sweepable: tuple[str, ...] = ()  # objectives: their settings that only change traced weights (see sweep)
    # objectives: re-score one latent group (no hierarchies; jaxvae.objectives.estimators)
    single_group: bool = False


class Registry(Generic[T]):
    """The components of one kind, by name: the single list of choices of the config key ``key``.

    ``REGISTRY[name]`` is the constructor; ``REGISTRY.spec(name)`` its :class:`Spec`; iterating gives the names.
    Add a component with ``@REGISTRY.register("name", ...)``; the config then accepts it.
    """

    def __init__(self, key: str):
        self.key = key
        self._specs: dict[str, Spec[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def add(build: T) -> T:
            self._specs[name] = Spec(build, doc=inspect.getdoc(build) or "", **meta)
            return build

        return add

    def spec(self, name: str) -> Spec[T]:
        if name not in self._specs:
            close = difflib.get_close_matches(name, list(self._specs), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{self.key}={name!r} is not valid.{hint} Choose one of: {', '.join(self._specs)}.")
        return self._specs[name]

    def __getitem__(self, name: str) -> T:
        return self.spec(name).build

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


# ------------------------------------------------------------------------------------------------- model

LIKELIHOODS: Registry[Callable[[Config], likelihoods.Likelihood]] = Registry("model.likelihood")


def _scale(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # "learned", "per_pixel", "optimal"


for _name in likelihoods.names():
    LIKELIHOODS.register(_name)(lambda cfg, _name=_name: likelihoods.get(_name))
del _name
LIKELIHOODS.register("categorical")(lambda cfg: likelihoods.get("categorical", num_classes=cfg.model.num_classes))
LIKELIHOODS.register("gaussian")(lambda cfg: likelihoods.get("gaussian", sigma=_scale(cfg.model.likelihood_scale)))
LIKELIHOODS.register("laplace")(lambda cfg: likelihoods.get("laplace", scale=_scale(cfg.model.likelihood_scale)))
LIKELIHOODS.register("discretized_logistic_mixture")(
    lambda cfg: likelihoods.get("discretized_logistic_mixture", num_mixtures=cfg.model.num_mixtures))


def build_likelihood(cfg: Config) -> likelihoods.Likelihood:
    """The decoder's likelihood of ``model.likelihood`` (:data:`LIKELIHOODS`)."""
    return LIKELIHOODS[cfg.model.likelihood](cfg)


# A model builder is ``(event_shape, latent_dim, likelihood, rngs) -> Model``: the signature of user builders
# given as `model.network=MODULE:FUNCTION` or `jv.fit(..., model=builder)`.
ModelBuilder = Callable[..., Model]

# Built-in priors and networks: `model.prior` / `model.network` (the config validates against these registries).
PRIORS: Registry[Callable[[Config, tuple[int, ...], nnx.Rngs], priors.Prior]] = Registry("model.prior")
PRIORS.register("standard_normal", factorized=True)(
    lambda cfg, event_shape, rngs: priors.StandardNormal(cfg.model.latent_dim))
PRIORS.register("learned_gaussian", factorized=True)(
    lambda cfg, event_shape, rngs: priors.LearnedGaussian(cfg.model.latent_dim))
PRIORS.register("mixture")(lambda cfg, event_shape, rngs: priors.MixtureOfGaussians(
    cfg.model.latent_dim, cfg.model.prior_components, rngs=rngs))
PRIORS.register("vamp")(lambda cfg, event_shape, rngs: priors.VampPrior(
    cfg.model.latent_dim, cfg.model.prior_components, event_shape,
    init_mean=127.5 if cfg.data.scale == "uint8" else 0.5,
    init_scale=0.05 * (255.0 if cfg.data.scale == "uint8" else 1.0), rngs=rngs))

NETWORKS: Registry[Callable[..., VAE]] = Registry("model.network")


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


@NETWORKS.register("mlp")
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


@NETWORKS.register("conv")
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
INFERENCE: Registry[Callable[..., Model]] = Registry("model.inference")


def _mlp_hierarchy(cls: type) -> Callable[..., Model]:
    def build(cfg: Config, event_shape, likelihood, rngs) -> Model:
        m = cfg.model
        return cls(event_shape, m.latent_dims, likelihood, hidden=m.layer_hidden or None, depth=m.layer_depth,
                   activation=m.activation, log_scale_clamp=m.log_scale_clamp or None, rngs=rngs)
    return build


INFERENCE.register("bottom_up")(_mlp_hierarchy(hierarchy.BottomUpVAE))
INFERENCE.register("ladder")(_mlp_hierarchy(hierarchy.LadderVAE))


@INFERENCE.register("top_down")
def _top_down(cfg: Config, event_shape, likelihood, rngs) -> Model:
    m = cfg.model
    if len(event_shape) != 3 or event_shape[0] % 4 or event_shape[1] % 4:
        raise ConfigError(f"model.inference=top_down needs images (H, W, C) with H and W divisible by 4; the data "
                          f"has event shape {tuple(event_shape)}. Use model.inference=bottom_up or ladder.")
    return topdown.TopDownVAE(event_shape, m.latent_dims, likelihood, groups_per_scale=m.groups_per_scale or None,
                              channels=m.residual_channels, cells=m.cells, activation=m.activation,
                              log_scale_clamp=m.log_scale_clamp or None, conv_impl=m.conv_impl, rngs=rngs)


@NETWORKS.register("hierarchical")
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


def build_program(cfg: Config, model: PureModel, objective: Objective, optimizer: optax.GradientTransformation,
                  program: ProgramBuilder | None = None) -> Program:
    """The training program (:mod:`jaxvae.training`): ``program`` (a function ``(cfg, model, objective,
    optimizer) -> Program``), else the one named by ``train.program``, else one player training every parameter
    with ``objective`` and ``optimizer`` (every built-in preset)."""
    if program is None and cfg.train.program:
        program = resolve_builder(cfg.train.program, "train.program",
                                  "(cfg, model, objective, optimizer) -> jaxvae.training.Program")
    if program is None:
        return Program.single(objective, optimizer)
    built = program(cfg, model, objective, optimizer)
    if not isinstance(built, Program):
        raise ConfigError(f"The training program function {builder_reference(program)} returned a "
                          f"{type(built).__name__}, not a jaxvae.training.Program.")
    return built


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


# --------------------------------------------------------------------------------------------- optimizer

# A learning-rate schedule's builder: (cfg, total steps, steps per epoch) -> optax schedule.
LR_SCHEDULES: Registry[Callable[[Config, int, int], optax.Schedule]] = Registry("optimizer.schedule")
LR_SCHEDULES.register("constant")(lambda cfg, total, spe: optax.constant_schedule(cfg.optimizer.learning_rate))
LR_SCHEDULES.register("cosine")(
    lambda cfg, total, spe: optax.cosine_decay_schedule(cfg.optimizer.learning_rate, max(total, 1)))
LR_SCHEDULES.register("warmup_cosine")(lambda cfg, total, spe: optax.warmup_cosine_decay_schedule(
    0.0, cfg.optimizer.learning_rate, cfg.optimizer.warmup_steps, max(total, 1)))
LR_SCHEDULES.register("iwae")(lambda cfg, total, spe: schedules.iwae_learning_rate_schedule(
    cfg.optimizer.learning_rate, spe))
LR_SCHEDULES.register("multistep")(lambda cfg, total, spe: schedules.multistep_learning_rate_schedule(
    cfg.optimizer.learning_rate, cfg.optimizer.milestones, cfg.optimizer.milestone_factor, spe))

OPTIMIZERS: Registry[Callable[[Config, optax.Schedule], optax.GradientTransformation]] = Registry("optimizer.name")
OPTIMIZERS.register("adam")(lambda cfg, lr: optax.adam(lr, b1=cfg.optimizer.b1, b2=cfg.optimizer.b2,
                                                       eps=cfg.optimizer.eps))
OPTIMIZERS.register("adamax")(lambda cfg, lr: optax.adamax(lr, b1=cfg.optimizer.b1, b2=cfg.optimizer.b2,
                                                           eps=cfg.optimizer.eps))
OPTIMIZERS.register("adamw")(lambda cfg, lr: optax.adamw(lr, b1=cfg.optimizer.b1, b2=cfg.optimizer.b2,
                                                         eps=cfg.optimizer.eps,
                                                         weight_decay=cfg.optimizer.weight_decay))


def learning_rate_schedule(cfg: Config, total_steps: int, steps_per_epoch: int | None = None) -> optax.Schedule:
    """``optimizer.schedule`` (:data:`LR_SCHEDULES`) over ``total_steps`` (``steps_per_epoch``: for schedules
    defined in epochs; default: ``total_steps / train.epochs``)."""
    return LR_SCHEDULES[cfg.optimizer.schedule](cfg, total_steps, _epoch_steps(cfg, total_steps, steps_per_epoch))


def _epoch_steps(cfg: Config, total_steps: int, steps_per_epoch: int | None) -> int:
    if steps_per_epoch is not None:
        return steps_per_epoch
    return max(1, total_steps // max(cfg.train.epochs, 1))


def skip_threshold(cfg: Config) -> float | None:
    """``optimizer.skip_threshold`` for :func:`jaxvae.training.step.make_train_step` (``None`` when 0:
    disabled)."""
    return cfg.optimizer.skip_threshold or None


def build_optimizer(cfg: Config, total_steps: int, steps_per_epoch: int | None = None
                    ) -> optax.GradientTransformation:
    """``optimizer.name`` (:data:`OPTIMIZERS`) with its learning-rate schedule, after NVAE's spectral
    regularization (:func:`jaxvae.objectives.regularizers.spectral_regularization`,
    ``optimizer.spectral_reg.weight``) and global-norm clipping when set, followed by the reduction on plateau
    (``optimizer.plateau``, which reads the training loss the train step passes as ``value``) and the parameters'
    moving average (:func:`jaxvae.training.step.ema_params`) when set. ``steps_per_epoch`` (default ``total_steps /
    train.epochs``) sizes what is defined in epochs."""
    o = cfg.optimizer
    spe = _epoch_steps(cfg, total_steps, steps_per_epoch)
    opt = OPTIMIZERS[o.name](cfg, learning_rate_schedule(cfg, total_steps, spe))
    opt = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), opt) if o.grad_clip_norm > 0 else opt
    sr = o.spectral_reg
    if sr.weight > 0:
        weight = regularizers.spectral_weight_schedule(sr.weight, sr.init_weight, sr.warmup_steps)
        opt = optax.chain(regularizers.spectral_regularization(weight, power_iterations=sr.power_iterations), opt)
    pl = o.plateau
    if pl.patience > 0:  # optax counts in accumulated values: one per epoch of training losses
        opt = optax.chain(opt, optax.contrib.reduce_on_plateau(
            factor=pl.factor, patience=pl.patience, rtol=pl.rtol, cooldown=pl.cooldown, accumulation_size=spe,
            min_scale=pl.min_scale))
    return optax.chain(opt, train_lib.ema_params(o.ema_decay)) if o.ema_decay > 0 else opt


# --------------------------------------------------------------------------------------------- objective

BETA_SCHEDULES: Registry[Callable[[Config, int], optax.Schedule]] = Registry("objective.beta_schedule")
BETA_SCHEDULES.register("constant")(lambda cfg, total: schedules.constant_schedule(cfg.objective.beta))
BETA_SCHEDULES.register("cyclical")(lambda cfg, total: schedules.cyclical_schedule(
    total, num_cycles=cfg.objective.num_cycles, ratio=cfg.objective.cycle_ratio,
    init_value=cfg.objective.beta_start, end_value=cfg.objective.beta))


def _ramp(factory: Callable[..., optax.Schedule]) -> Callable[[Config, int], optax.Schedule]:
    def build(cfg: Config, total: int) -> optax.Schedule:
        ob = cfg.objective
        if ob.warmup_steps <= 0:
            raise ConfigError(f"objective.beta_schedule={ob.beta_schedule} needs objective.warmup_steps > 0 "
                              "(the length of the ramp in steps).")
        return factory(init_value=ob.beta_start, end_value=ob.beta, transition_steps=ob.warmup_steps)

    return build


BETA_SCHEDULES.register("linear")(_ramp(schedules.linear_schedule))
BETA_SCHEDULES.register("sigmoid")(_ramp(schedules.sigmoid_schedule))
BETA_SCHEDULES.register("cosine")(_ramp(schedules.cosine_schedule))


def beta_schedule(cfg: Config, total_steps: int) -> optax.Schedule:
    """``objective.beta_schedule`` (:data:`BETA_SCHEDULES`) over ``total_steps``."""
    return BETA_SCHEDULES[cfg.objective.beta_schedule](cfg, total_steps)


CONTROLLERS: Registry[Callable[[Config], controllers.KLController | None]] = Registry("objective.controller")
CONTROLLERS.register("none")(lambda cfg: None)
CONTROLLERS.register("geco")(lambda cfg: controllers.geco(
    cfg.objective.geco.tolerance, alpha=cfg.objective.geco.alpha, step_size=cfg.objective.geco.step_size))
CONTROLLERS.register("pi")(lambda cfg: controllers.pi_controller(
    cfg.objective.pi.kl_target, kp=cfg.objective.pi.kp, ki=cfg.objective.pi.ki, beta_min=cfg.objective.beta_start,
    beta_max=cfg.objective.beta))


def build_controller(cfg: Config) -> controllers.KLController | None:
    """The configured KL controller (:data:`CONTROLLERS`), or ``None`` when beta follows
    ``objective.beta_schedule``."""
    return CONTROLLERS[cfg.objective.controller](cfg)


def _f32(value: Any) -> Array:
    return jnp.asarray(value, jnp.float32)


class ObjectiveParts(NamedTuple):
    """What an objective's builder returns: the per-step traced weights and the loss that reads them."""

    hyper: Callable[[Array], dict[str, Array]]  # step -> {name: weight}
    loss: Callable[..., tuple[Array, objectives.ObjectiveOutput]]  # (params, state, x, key, step, hyper)


class ObjectiveContext(NamedTuple):
    """What an objective's builder may use besides the config."""

    model: PureModel
    beta: optax.Schedule  # objective.beta_schedule
    num_samples: int
    dataset_size: int | None


# An objective's builder: (cfg, context) -> ObjectiveParts. `sweepable` names the settings (keys under
# `objective.`) that only change the traced weights of `hyper`, so models that differ in them share a program.
OBJECTIVES: Registry[Callable[[Config, ObjectiveContext], ObjectiveParts]] = Registry("objective.name")


@OBJECTIVES.register("elbo", controllable=True)
def _elbo(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The (beta-weighted) ELBO (Kingma & Welling 2014; Higgins et al. 2017)."""
    return ObjectiveParts(lambda step: {"beta": c.beta(step)},
                          lambda params, state, x, key, step, hp: objectives.elbo(
                              c.model, params, x, key, beta=hp["beta"], num_samples=c.num_samples,
                              analytic_kl=cfg.objective.analytic_kl, kl_balance=cfg.objective.kl_balance))


@OBJECTIVES.register("iwae")
def _iwae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The importance-weighted bound with objective.num_samples samples (Burda et al. 2016)."""
    return ObjectiveParts(lambda step: {}, lambda params, state, x, key, step, hp: objectives.iwae(
        c.model, params, x, key, num_samples=c.num_samples))


@OBJECTIVES.register("free_bits", controllable=True, needs_factorized_prior=True, sweepable=("free_bits.nats",))
def _free_bits(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The ELBO with a KL floor per group of dimensions (Kingma et al. 2016)."""
    fb = cfg.objective.free_bits
    if fb.per_layer:  # one floor per latent group (the layers of a hierarchy)
        return ObjectiveParts(lambda step: {"beta": c.beta(step), "free_bits": _f32(fb.nats)},
                              lambda params, state, x, key, step, hp: objectives.free_bits_per_group(
                                  c.model, params, x, key, threshold=hp["free_bits"], beta=hp["beta"],
                                  num_samples=c.num_samples))
    return ObjectiveParts(lambda step: {"beta": c.beta(step), "free_bits": _f32(fb.nats)},
                          lambda params, state, x, key, step, hp: objectives.free_bits(
                              c.model, params, x, key, threshold=hp["free_bits"], beta=hp["beta"],
                              group_size=fb.group, num_samples=c.num_samples))


@OBJECTIVES.register("capacity", sweepable=("capacity.nats", "capacity.steps", "capacity.gamma"))
def _capacity(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """gamma |KL - C(t)| with a growing capacity C (Burgess et al. 2018)."""
    cap = cfg.objective.capacity
    capacity = schedules.capacity_schedule(cap.nats, cap.steps)
    return ObjectiveParts(lambda step: {"capacity": capacity(step), "gamma": _f32(cap.gamma)},
                          lambda params, state, x, key, step, hp: objectives.capacity(
                              c.model, params, x, key, capacity=hp["capacity"], gamma=hp["gamma"],
                              num_samples=c.num_samples, analytic_kl=cfg.objective.analytic_kl))


@OBJECTIVES.register("beta_tcvae", needs_factorized_prior=True, sweepable=("beta_tcvae.alpha", "beta_tcvae.gamma"))
def _beta_tcvae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The KL decomposed into index-code MI, total correlation and dimension-wise KL (Chen et al. 2018)."""
    tc = cfg.objective.beta_tcvae
    if not c.dataset_size:
        raise ValueError("beta_tcvae needs dataset_size (the number of training examples).")
    return ObjectiveParts(
        lambda step: {"beta": c.beta(step), "tc_alpha": _f32(tc.alpha), "tc_gamma": _f32(tc.gamma)},
        lambda params, state, x, key, step, hp: objectives.beta_tcvae(
            c.model, params, x, key, dataset_size=c.dataset_size, alpha=hp["tc_alpha"], beta=hp["beta"],
            gamma=hp["tc_gamma"], num_samples=c.num_samples))


@OBJECTIVES.register("info_vae", sweepable=("info_vae.alpha", "info_vae.mmd_weight"))
def _info_vae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The InfoVAE / MMD-VAE objective (Zhao et al. 2019)."""
    iv = cfg.objective.info_vae
    return ObjectiveParts(lambda step: {"mmd_alpha": _f32(iv.alpha), "mmd_lambda": _f32(iv.mmd_weight)},
                          lambda params, state, x, key, step, hp: objectives.info_vae(
                              c.model, params, x, key, alpha=hp["mmd_alpha"], lambda_=hp["mmd_lambda"],
                              kernel=iv.kernel, num_samples=c.num_samples))


@OBJECTIVES.register("miwae")
def _miwae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """MIWAE(M, K): the mean of M IWAE bounds of K = objective.num_samples samples (Rainforth et al. 2018)."""
    return ObjectiveParts(lambda step: {}, lambda params, state, x, key, step, hp: estimators.miwae(
        c.model, params, x, key, num_samples=c.num_samples, outer=cfg.objective.miwae.outer))


@OBJECTIVES.register("ciwae", sweepable=("ciwae.beta",))
def _ciwae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """CIWAE(beta): beta ELBO + (1 - beta) IWAE on the same samples (Rainforth et al. 2018)."""
    return ObjectiveParts(lambda step: {"ciwae_beta": _f32(cfg.objective.ciwae.beta)},
                          lambda params, state, x, key, step, hp: estimators.ciwae(
                              c.model, params, x, key, num_samples=c.num_samples, beta=hp["ciwae_beta"]))


@OBJECTIVES.register("piwae", single_group=True)
def _piwae(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """PIWAE: IWAE for the generative network, MIWAE(M, K) for the inference network (Rainforth et al. 2018)."""
    return ObjectiveParts(lambda step: {}, lambda params, state, x, key, step, hp: estimators.piwae(
        c.model, params, x, key, num_samples=c.num_samples, outer=cfg.objective.piwae.outer))


@OBJECTIVES.register("iwae_dreg", single_group=True)
def _iwae_dreg(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """IWAE with the doubly reparameterized gradient (Tucker et al. 2019)."""
    return ObjectiveParts(lambda step: {}, lambda params, state, x, key, step, hp: estimators.iwae_dreg(
        c.model, params, x, key, num_samples=c.num_samples))


@OBJECTIVES.register("elbo_stl", controllable=True, single_group=True)
def _elbo_stl(cfg: Config, c: ObjectiveContext) -> ObjectiveParts:
    """The (beta-weighted) Monte Carlo ELBO with the sticking-the-landing gradient (Roeder et al. 2017)."""
    return ObjectiveParts(lambda step: {"beta": c.beta(step)},
                          lambda params, state, x, key, step, hp: estimators.elbo_stl(
                              c.model, params, x, key, beta=hp["beta"], num_samples=c.num_samples))


# The settings every objective's KL weighting shares, also sweepable.
SWEEPABLE_COMMON = ("objective.beta", "objective.beta_start", "objective.beta_schedule", "objective.warmup_steps",
                    "objective.num_cycles", "objective.cycle_ratio")


def sweepable_keys() -> tuple[str, ...]:
    """Every key that may vary within one sweep: the shared KL-weight settings, every objective's ``sweepable``
    settings, and ``train.seed``."""
    own = [f"objective.{k}" for name in OBJECTIVES for k in OBJECTIVES.spec(name).sweepable]
    return (*SWEEPABLE_COMMON, *own, "train.seed")


def build_objective(cfg: Config, model: PureModel, total_steps: int, *, dataset_size: int | None = None
                    ) -> Objective:
    """The configured objective (:data:`OBJECTIVES`) as an :class:`Objective`, with its controller
    (:data:`CONTROLLERS`) if one is set.

    ``dataset_size`` (the number of training examples) is needed by beta-TCVAE's minibatch-weighted sampling.
    """
    ob = cfg.objective
    model = model.training()  # an objective trains: word dropout and dropout on (same parameters)
    parts = OBJECTIVES[ob.name](cfg, ObjectiveContext(model, beta_schedule(cfg, total_steps), ob.num_samples,
                                                      dataset_size))
    hyper, loss = parts.hyper, parts.loss
    controller = build_controller(cfg)
    if controller is None:
        return Objective(init=lambda params: {}, hyper=hyper, loss=loss,
                         update=lambda state, out, step, hp: state)

    # A controller owns beta: it is read from the controller state, and updated from the step's batch means.
    def controlled_loss(params, state, x, key, step, hp):
        return loss(params, state, x, key, step, {**hp, "beta": state.beta})

    def update(state, out, step, hp):
        return controller.update(state, jnp.mean(out.recon), jnp.mean(out.kl))

    scheduled = lambda step: {k: v for k, v in hyper(step).items() if k != "beta"}
    return Objective(init=lambda params: controller.init(), hyper=scheduled, loss=controlled_loss, update=update)


# Every registry, for the config's validation of choices.
REGISTRIES = (LIKELIHOODS, PRIORS, NETWORKS, INFERENCE, LR_SCHEDULES, OPTIMIZERS, BETA_SCHEDULES, CONTROLLERS,
              OBJECTIVES)
