"""Validation of a whole config in one place, with messages that say what is wrong and how to fix it;
the choices of component keys come from the JAX-free :mod:`jaxvae.catalog`."""

from __future__ import annotations

from collections.abc import Sequence

from jaxvae import catalog, meshspec
from jaxvae.catalog import Components
from jaxvae.config.schema import (
    TRACKER_NAMES,
    Config,
    all_keys,
    closest_hint,
    get_value,
    is_builder_reference,
    latent_size,
)
from jaxvae.errors import ConfigError

# Choices that no component registry owns (the registries of jaxvae.catalog own the others).
_CHOICES = {
    "model.conv_impl": ("auto", "xla", "matmul"),
    "model.init": ("flax", "torch", "glorot"),
    "model.posterior": ("diagonal", "planar", "radial", "iaf", "sylvester"),
    "model.decoder": ("factorized", "pixelcnn", "gru"),
    "model.conditional": ("none", "cvae", "m2"),
    "train.loop": ("auto", "scan", "host"),
    "data.scale": ("unit", "uint8"),
    "mesh.params": meshspec.PARAM_MODES,
    "track.wandb_mode": ("offline", "online", "disabled"),
}


def registered_components() -> Components:
    """The component catalog as it stands (:func:`jaxvae.catalog.components`: the built-ins and every component
    registered so far); no JAX is imported."""
    return catalog.components()


def topdown_groups(latent_channels: Sequence[int], groups_per_scale: Sequence[int] | None
                   ) -> tuple[tuple[int, ...], tuple[int, int]]:
    """``(latent channels per group, (fine, coarse) groups)`` of a top-down hierarchy from ``model.latent_dims``
    and ``model.groups_per_scale`` (default: half the groups at each scale, the extra one coarse); raises
    :class:`ConfigError` for settings no hierarchy can take."""
    chans = tuple(int(c) for c in latent_channels)
    if not chans or any(c <= 0 for c in chans):
        raise ConfigError(f"A top-down hierarchy needs one positive number of latent channels per group, bottom "
                          f"(finest scale) first, e.g. model.latent_dims=4,4,4,4; got {latent_channels!r}.")
    if groups_per_scale:
        split = tuple(int(g) for g in groups_per_scale)
        if len(split) != 2 or any(g < 0 for g in split) or sum(split) != len(chans) or split[1] == 0:
            raise ConfigError(f"model.groups_per_scale gives the latent groups at the fine (H/2) and the coarse "
                              f"(H/4) scale, e.g. 2,2, summing to the {len(chans)} groups of model.latent_dims "
                              f"with at least one at the coarse scale; got {groups_per_scale!r}.")
    else:
        split = (len(chans) // 2, len(chans) - len(chans) // 2)
    return chans, split  # type: ignore[return-value]


# Numeric settings must be >= 0; these must be > 0.
_POSITIVE = ("model.latent_dim", "model.conv_hidden", "model.pixelcnn.layers", "model.pixelcnn.features",
             "model.rnn.embed", "model.rnn.hidden",
             "model.residual_channels", "model.num_mixtures", "model.prior_components",
             "objective.num_samples", "objective.num_cycles", "objective.free_bits.group",
             "objective.capacity.steps", "optimizer.learning_rate", "train.batch_size", "train.epochs",
             "train.log_every", "train.keep_checkpoints", "eval.num_samples", "eval.batch_size",
             "monitor.batch_size", "optimizer.spectral_reg.power_iterations", "objective.miwae.outer",
             "objective.piwae.outer")


def _validate_conditional(cfg: Config) -> None:
    m = cfg.model
    if m.conditional == "none":
        if cfg.data.labels_per_class:
            raise ConfigError("data.labels_per_class sets the labelled share of the semi-supervised M2: set "
                              "model.conditional=m2, or leave data.labels_per_class at 0.")
        return
    if m.network != "mlp" or m.decoder != "factorized" or m.posterior != "diagonal" or m.committed_rate:
        raise ConfigError(f"model.conditional={m.conditional} is built with MLP networks, a factorized decoder "
                          f"and a diagonal posterior; got network={m.network}, decoder={m.decoder}, "
                          f"posterior={m.posterior}, committed_rate={m.committed_rate}. Use model.network=mlp, "
                          "model.decoder=factorized, model.posterior=diagonal, model.committed_rate=0, or a "
                          "model builder of your own (docs/models.md: 'Conditional and semi-supervised VAEs').")
    if m.prior != "standard_normal":
        raise ConfigError(f"model.conditional={m.conditional} has the label-independent prior N(0, I) (as in "
                          f"Kingma et al. 2014); model.prior={m.prior} is not supported with it. Leave "
                          "model.prior=standard_normal.")
    if m.condition_classes < 2:
        raise ConfigError(f"model.condition_classes must be the number of classes of the labels (>= 2; 10 for "
                          f"digits and MNIST); got {m.condition_classes}.")
    if m.conditional == "cvae" and cfg.data.labels_per_class:
        raise ConfigError("data.labels_per_class is for model.conditional=m2 (semi-supervised); the conditional "
                          "VAE reads every label. Leave it at 0, or set model.conditional=m2.")
    if cfg.train.aggressive.enabled:
        raise ConfigError(f"train.aggressive (the inner encoder loop of He et al. 2019) is built for "
                          f"unconditional models; model.conditional={m.conditional} is not supported with it. "
                          "Turn one off.")
    if m.conditional == "m2" and cfg.objective.name not in ("elbo", "iwae"):
        raise ConfigError(f"model.conditional=m2 trains with objective.name=elbo or iwae (its unlabelled bound "
                          f"sums over the classes inside the model); got objective.name={cfg.objective.name}.")


def validate(cfg: Config, *, components: Components | None = None) -> Config:
    """Checks ranges and choices; raises :class:`ConfigError` naming the key and the fix. Returns ``cfg``.

    ``components``: what the component catalog holds (default: :func:`jaxvae.catalog.components`, the built-ins
    and the components registered so far; no JAX is imported)."""
    components = registered_components() if components is None else components
    networks = components.names["model.network"]
    network = cfg.model.network
    if not is_builder_reference(network):
        if network not in networks:
            raise ConfigError(f"model.network={network!r} is not valid.{closest_hint(network, networks)} "
                              f"Choose one of: {', '.join(networks)}, or give your own model builder as "
                              "MODULE:FUNCTION (e.g. model.network=mymodels:build).")
    elif network.count(":") != 1 or not network.split(":")[1] or \
            not all(p.isidentifier() for p in network.split(":")[0].split(".")):
        raise ConfigError(f"model.network={network!r}: a user model builder is MODULE:FUNCTION, e.g. "
                          "model.network=mymodels:build (a module importable from the working directory).")
    program = cfg.train.program
    if program and (program.count(":") != 1 or not program.split(":")[1] or
                    not all(p.isidentifier() for p in program.split(":")[0].split("."))):
        raise ConfigError(f"train.program={program!r}: a training program is given as MODULE:FUNCTION, e.g. "
                          "train.program=myprograms:adversarial (a module importable from the working directory), "
                          "or left empty for the one-player program.")
    if program and cfg.train.aggressive.enabled:
        raise ConfigError(f"train.aggressive brings its own training step; it cannot run with train.program="
                          f"{program!r}. Set train.aggressive.enabled=false, or train.program= (empty).")
    # model.network is checked above (a registered name or a user builder's reference).
    choices = {**_CHOICES, **{k: v for k, v in components.names.items() if k != "model.network"}}
    for key, options in choices.items():
        value = get_value(cfg, key)
        if value not in options:
            raise ConfigError(f"{key}={value!r} is not valid.{closest_hint(str(value), options)} "
                              f"Choose one of: {', '.join(options)}.")
    for key in all_keys():
        value = get_value(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in _POSITIVE and value <= 0:
            raise ConfigError(f"{key} must be positive; got {value}.")
        if value < 0:
            raise ConfigError(f"{key} must be >= 0; got {value}.")
    if cfg.train.steps is not None and cfg.train.steps <= 0:
        raise ConfigError(f"train.steps must be positive (or 'none' to train for train.epochs); "
                          f"got {cfg.train.steps}.")
    if not 0.0 < cfg.objective.cycle_ratio <= 1.0:
        raise ConfigError(f"objective.cycle_ratio must be in (0, 1]; got {cfg.objective.cycle_ratio}.")
    if any(h <= 0 for h in cfg.model.hidden) or any(c <= 0 for c in cfg.model.channels):
        raise ConfigError("model.hidden and model.channels must be positive widths, e.g. model.hidden=512,256.")
    m = cfg.model
    if m.network == "hierarchical":
        if not m.latent_dims or any(d <= 0 for d in m.latent_dims):
            raise ConfigError("model.network=hierarchical needs model.latent_dims, one positive size per "
                              "stochastic layer, bottom first (e.g. model.latent_dims=100,50).")
        if m.layer_hidden and (len(m.layer_hidden) != len(m.latent_dims) or any(h <= 0 for h in m.layer_hidden)):
            raise ConfigError(f"model.layer_hidden={','.join(map(str, m.layer_hidden))} must give one positive "
                              f"width per stochastic layer ({len(m.latent_dims)} for model.latent_dims="
                              f"{','.join(map(str, m.latent_dims))}), or be empty (twice each layer's units).")
        if m.inference == "top_down" and m.init != "flax":
            raise ConfigError(f"model.init={m.init} would overwrite the top-down hierarchy's own initialization "
                              "(VDVAE's scaled residual cells); leave model.init=flax for "
                              "model.inference=top_down.")
        if m.inference == "top_down":
            topdown_groups(m.latent_dims, m.groups_per_scale)
        elif m.groups_per_scale:
            raise ConfigError(f"model.groups_per_scale sets the scales of model.inference=top_down; "
                              f"model.inference={m.inference} has one MLP layer per entry of model.latent_dims.")
        if m.prior != "standard_normal":
            raise ConfigError(f"model.network=hierarchical has a standard normal prior on its top layer (the "
                              f"layers below are conditioned on it); model.prior={m.prior} is for one-layer "
                              "networks. Leave model.prior=standard_normal.")
    elif m.latent_dims:
        raise ConfigError(f"model.latent_dims={','.join(map(str, m.latent_dims))} sets the layers of "
                          f"model.network=hierarchical; model.network={m.network} has one latent layer of "
                          "model.latent_dim units. Set model.network=hierarchical, or model.latent_dim.")
    if m.posterior != "diagonal":
        if m.network != "mlp":
            raise ConfigError(f"model.posterior={m.posterior} (a flow on the encoder's Gaussian) is built for "
                              f"model.network=mlp; model.network={m.network} has a diagonal Gaussian posterior. "
                              "Use model.network=mlp, or model.posterior=diagonal.")
        if m.prior == "vamp":
            raise ConfigError(f"model.prior=vamp is a mixture of the encoder's posteriors, which needs their "
                              f"density at any point; a flow posterior (model.posterior={m.posterior}) has it "
                              "only along its samples. Use another prior, or model.posterior=diagonal.")
        if m.flow_steps < 1:
            raise ConfigError(f"model.flow_steps must be >= 1 for model.posterior={m.posterior}; got "
                              f"{m.flow_steps}.")
    if m.committed_rate:
        if m.network not in ("mlp", "conv") or m.posterior != "diagonal" or m.prior != "standard_normal":
            raise ConfigError(f"model.committed_rate fixes the scale of a diagonal Gaussian posterior so that its "
                              f"KL to the standard normal prior is at least {m.committed_rate} nats per unit: it "
                              "needs model.network=mlp or conv, model.posterior=diagonal and "
                              f"model.prior=standard_normal; got network={m.network}, posterior={m.posterior}, "
                              f"prior={m.prior}.")
    if m.decoder == "pixelcnn":
        if m.network not in ("mlp", "conv"):
            raise ConfigError(f"model.decoder=pixelcnn is built on model.network=conv (spatial conditioning on z) "
                              f"or mlp (global conditioning); model.network={m.network} has its own decoder. Use "
                              "model.network=conv or mlp, or model.decoder=factorized.")
        k = m.pixelcnn.kernel_size
        if k < 3 or k % 2 == 0:
            raise ConfigError(f"model.pixelcnn.kernel_size must be odd and >= 3 (e.g. 3 or 5); got {k}.")
    if m.decoder == "gru":
        if m.network != "mlp" or m.likelihood != "categorical":
            raise ConfigError(f"model.decoder=gru models token sequences with its own GRU encoder: it needs "
                              f"model.network=mlp (the default; the recurrent encoder replaces the MLP) and "
                              f"model.likelihood=categorical; got network={m.network}, likelihood={m.likelihood}. "
                              "Start from the words preset: --preset words.")
        if not 0.0 <= m.rnn.word_dropout < 1.0:
            raise ConfigError(f"model.rnn.word_dropout is the share of input tokens replaced in training, in "
                              f"[0, 1) (Bowman et al. 2016 found 0.25-0.5 useful); got {m.rnn.word_dropout}.")
    elif m.rnn.word_dropout:
        raise ConfigError("model.rnn.word_dropout applies to the recurrent decoder: set model.decoder=gru, or "
                          "leave word_dropout at 0.")
    if m.likelihood == "categorical" and m.num_classes < 2:
        raise ConfigError(f"model.likelihood=categorical needs model.num_classes, the vocabulary size of the "
                          f"token data (words: 28; the words preset sets it); got {m.num_classes}.")
    _validate_conditional(cfg)
    if cfg.model.network == "conv" and len(cfg.model.channels) < 2:
        raise ConfigError(f"model.network=conv needs at least two model.channels (two stride-2 layers, e.g. "
                          f"model.channels=32,64); got {cfg.model.channels}.")
    ob = cfg.objective
    if not ob.free_bits.per_layer and latent_size(cfg) is not None and latent_size(cfg) % ob.free_bits.group:
        key = "sum(model.latent_dims)" if cfg.model.network == "hierarchical" else "model.latent_dim"
        raise ConfigError(f"objective.free_bits.group={ob.free_bits.group} must divide {key}={latent_size(cfg)}.")
    if not 0.0 <= cfg.optimizer.ema_decay < 1.0:
        raise ConfigError(f"optimizer.ema_decay must be in [0, 1) (0 turns the moving average off; VDVAE uses "
                          f"0.9999); got {cfg.optimizer.ema_decay}.")
    o = cfg.optimizer
    if (o.schedule == "multistep") != bool(o.milestones):
        raise ConfigError("optimizer.schedule=multistep needs optimizer.milestones (epochs, e.g. "
                          "optimizer.milestones=200,350,500,750,1000), and optimizer.milestones is only read by "
                          "it; "
                          f"got optimizer.schedule={o.schedule}, optimizer.milestones={list(o.milestones)}.")
    if o.milestones and (min(o.milestones) < 1 or list(o.milestones) != sorted(set(o.milestones))):
        raise ConfigError(f"optimizer.milestones must be strictly increasing epochs >= 1; got "
                          f"{list(o.milestones)}.")
    if not 0.0 < o.milestone_factor <= 1.0:
        raise ConfigError(f"optimizer.milestone_factor must be in (0, 1]; got {o.milestone_factor}.")
    if not 0.0 < cfg.optimizer.plateau.factor < 1.0:
        raise ConfigError(f"optimizer.plateau.factor must be in (0, 1); got {cfg.optimizer.plateau.factor}.")
    if not 0.0 <= ob.ciwae.beta <= 1.0:
        raise ConfigError(f"objective.ciwae.beta must be in [0, 1] (1 is the ELBO, 0 IWAE); got {ob.ciwae.beta}.")
    if not 0.0 < ob.geco.alpha < 1.0:
        raise ConfigError(f"objective.geco.alpha must be in (0, 1); got {ob.geco.alpha}.")
    if ob.kl_balance and ob.name != "elbo":
        raise ConfigError(f"objective.kl_balance rebalances the KL gradients of objective.name=elbo (during its "
                          f"warm-up, objective.beta_schedule); objective.name={ob.name} has its own KL weighting.")
    if ob.controller != "none" and ob.name not in components.controllable:
        raise ConfigError(f"objective.controller={ob.controller} sets the KL weight of the "
                          f"{' or '.join(components.controllable)} objectives; objective.name={ob.name} has its "
                          "own weights.")
    if ob.name in components.single_group and cfg.model.network == "hierarchical":
        generic = [n for n in components.names["objective.name"] if n in ("iwae", "miwae", "ciwae")]
        raise ConfigError(f"objective.name={ob.name} re-scores one latent group with some parameters held fixed; "
                          f"model.network=hierarchical has several. Use objective.name={' or '.join(generic)}.")
    if ob.name in components.needs_factorized_prior and not is_builder_reference(cfg.model.network) and \
            cfg.model.prior not in components.factorized_priors:
        raise ConfigError(f"objective.name={ob.name} needs a factorized prior (a KL per dimension): use "
                          f"model.prior={' or '.join(components.factorized_priors)}.")
    _validate_mesh(cfg)
    backends = cfg.track.backends
    unknown = [b for b in backends if b not in (*TRACKER_NAMES, "none")]
    if unknown or ("none" in backends and len(backends) > 1):
        problem = f"unknown {', '.join(map(repr, unknown))}" if unknown else "none cannot go with trackers"
        raise ConfigError(f"track.backends={','.join(backends)}: {problem}. Give any of "
                          f"{', '.join(TRACKER_NAMES)} (comma-separated), or none.")
    _validate_aggressive(cfg)
    return cfg


def _validate_aggressive(cfg: Config) -> None:
    """``train.aggressive``: the inner loop's counts, and the settings it cannot run with (see
    jaxvae.training.aggressive).

    Every built-in objective and KL controller works with it: each loss is a function of one batch, and a
    controller's state is updated once per training step (by the outer update), not by the inner updates."""
    a = cfg.train.aggressive
    for name in ("max_inner", "check_every", "patience"):
        if getattr(a, name) < 1:
            raise ConfigError(f"train.aggressive.{name} must be >= 1; got {getattr(a, name)} (He et al. 2019 use "
                              "max_inner=100, check_every=10, patience=5).")
    if a.check_every > a.max_inner:
        raise ConfigError(f"train.aggressive.check_every={a.check_every} is larger than train.aggressive."
                          f"max_inner={a.max_inner}, so the inner loop's stopping rule would never be checked; "
                          "use max_inner >= check_every >= 1 (e.g. max_inner=100, check_every=10).")
    if not a.encoder_key.strip():
        raise ConfigError("train.aggressive.encoder_key must name the top-level parameter key of the encoder "
                          "(e.g. train.aggressive.encoder_key=encoder).")
    if not a.enabled:
        return
    if cfg.train.loop == "host":
        raise ConfigError("train.aggressive draws the inner loop's fresh batches from the training set kept on "
                          "the device, which train.loop=host does not do; use train.loop=scan or auto (auto "
                          "chooses scan for aggressive training).")
    # The encoder's optimizer makes up to max_inner updates per training step: whatever counts updates in the
    # optimizer's state would run ahead for the encoder.
    o = cfg.optimizer
    counted = [f"optimizer.schedule={o.schedule} (set optimizer.schedule=constant)"] \
        if o.schedule != "constant" else []
    if o.plateau.patience:
        counted.append(f"optimizer.plateau.patience={o.plateau.patience} (set it to 0)")
    if o.ema_decay:
        counted.append(f"optimizer.ema_decay={o.ema_decay:g} (set it to 0)")
    sr = o.spectral_reg
    if sr.weight > 0 and sr.init_weight > 0 and sr.warmup_steps > 0:
        counted.append("optimizer.spectral_reg's warm-up (set optimizer.spectral_reg.init_weight=0 for a constant "
                       "weight)")
    if counted:
        raise ConfigError("train.aggressive gives the encoder its own optimizer, which makes up to "
                          f"train.aggressive.max_inner={a.max_inner} updates per training step, so settings that "
                          "count optimizer updates would run ahead for the encoder and mean something else for "
                          f"the decoder: {'; '.join(counted)}.")


def _validate_mesh(cfg: Config) -> None:
    """The mesh shape's syntax, its axis names, and (for an explicit shape) that the batch splits over ``data``;
    the device count is checked when the mesh is built (:func:`jaxvae.sharding.make_mesh`)."""
    dims = meshspec.parse_mesh_shape(cfg.mesh.shape)
    if dims is None:
        return
    names = meshspec.mesh_axis_names(dims, cfg.mesh.axis_names)
    data = dims[names.index(meshspec.DATA_AXIS)]
    bs = cfg.train.batch_size
    if bs % data:
        lower, upper = (bs // data) * data, (bs // data + 1) * data
        options = " or ".join(f"train.batch_size={v}" for v in (lower, upper) if v > 0)
        raise ConfigError(f"train.batch_size={bs} does not split over the {data} devices of the mesh's data axis "
                          f"(mesh.shape={cfg.mesh.shape}): the global batch is per-device batch x {data}. Use "
                          f"{options} (a multiple of {data}), or a mesh whose data axis divides {bs}.")
