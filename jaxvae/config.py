"""Configuration: frozen dataclasses, named presets, dotted overrides and validation.

A config is a tree of frozen dataclasses. Presets are named configs; overrides are ``"section.key=value"``
strings (the CLI's ``--set``), parsed by the field's declared type. Everything is validated in one place with
messages that say what is wrong and how to fix it, and the resolved config round-trips through JSON
(``config.json`` in every run directory).

Example::

    cfg = jv.config.get_preset("mnist")
    cfg = jv.config.apply_overrides(cfg, ["model.latent_dim=16", "train.steps=2000"])
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from jaxvae import catalog, meshspec
from jaxvae.catalog import Components
from jaxvae.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, and where its files are (see :func:`jaxvae.data.load_dataset`)."""

    name: str = "digits"  # registry name, or a path to a .npy/.npz file or an image folder
    dir: str | None = None  # explicit data folder; else $JAXVAE_DATA_DIR, the cache, then download
    dynamic_binarization: bool = False  # re-sample binary training images every epoch (IWAE protocol)
    scale: str = "unit"  # "unit": values in [0, 1]; "uint8": integers 0..255 (categorical / logistic mixture)
    valid_size: int | None = None  # validation examples taken from train where the dataset defines none
    download: bool = True  # fetch missing files (checksummed) into the cache; false: only local files
    # model.conditional=m2: training labels kept per class (a balanced subset drawn with the data seed; the other
    # training examples are used without labels; Kingma et al. 2014: 10 per class = 100 labels); 0: all labelled
    labels_per_class: int = 0


@dataclasses.dataclass(frozen=True)
class PixelCNNConfig:
    """``model.decoder=pixelcnn``: the gated PixelCNN decoder (van den Oord et al. 2016;
    jaxvae.models.autoregressive)."""

    layers: int = 4  # gated layers; the receptive field grows by kernel_size // 2 rows and columns per layer
    features: int = 32  # width of the vertical and horizontal stacks
    kernel_size: int = 3  # odd, >= 3
    cond_features: int = 8  # size of z's conditioning (network=conv: channels of a feature map; mlp: a vector)


@dataclasses.dataclass(frozen=True)
class RNNConfig:
    """``model.decoder=gru``: GRU encoder and decoder of token sequences (Bowman et al. 2016;
    jaxvae.models.recurrent)."""

    embed: int = 64  # token embedding size
    hidden: int = 256  # the decoder GRU's state size
    encoder_hidden: int = 0  # the encoder GRU's state size (0: the same as hidden)
    word_dropout: float = 0.0  # share of the decoder's input tokens replaced by <unk> in training (Bowman: 0.25+)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The architecture, the decoder's likelihood and the prior."""

    network: str = "mlp"  # mlp, conv, hierarchical, or a user builder MODULE:FUNCTION (README: "Bring your own")
    latent_dim: int = 8  # one latent layer's units (network=hierarchical: see latent_dims)
    hidden: tuple[int, ...] = (256, 128)  # MLP encoder widths (the decoder mirrors them)
    channels: tuple[int, ...] = (32, 64)  # conv encoder channels (the decoder mirrors them)
    conv_hidden: int = 256  # network=conv: the dense layer between the conv stack and the latent layer
    conv_impl: str = "auto"  # auto (matmul on CPU, native on GPU/TPU), xla or matmul; see jaxvae.models.convops
    # weight init: flax (LeCun normal), torch (nn.Linear's uniform), glorot; jaxvae.models.inits
    init: str = "flax"
    # the hidden layers' nonlinearity: relu, gelu, silu, tanh, elu, ... (jaxvae.models.nets)
    activation: str = "relu"
    likelihood: str = "bernoulli"  # see jaxvae.distributions.likelihoods.get
    likelihood_scale: str = "1.0"  # Gaussian sigma / Laplace scale: a number, "learned", "per_pixel", "optimal"
    num_mixtures: int = 5  # discretized logistic mixture components
    prior: str = "standard_normal"  # standard_normal, learned_gaussian, mixture, vamp
    prior_components: int = 10  # mixture components / VampPrior pseudo-inputs
    # The posterior of network=mlp (jaxvae.models.flows): diagonal, or a normalizing flow on it: planar, radial
    # (Rezende & Mohamed 2015), iaf (Kingma et al. 2016), sylvester (van den Berg et al. 2018, Householder)
    posterior: str = "diagonal"
    flow_steps: int = 4  # K, steps of the flow
    iaf_hidden: int = 0  # iaf: MADE hidden width and context size (0: twice model.latent_dim)
    householder: int = 0  # sylvester: Householder reflections per step (0: min(latent_dim, 8))
    # network=hierarchical (jaxvae.models.hierarchy): several stochastic layers, MLP conditionals.
    latent_dims: tuple[int, ...] = ()  # units per stochastic layer, bottom (next to the data) first: 100,50
    # bottom_up (IWAE, Burda et al. 2016), ladder (Soenderby et al. 2016) or top_down (NVAE/VDVAE-style residual
    # conv hierarchy, jaxvae.models.topdown: model.latent_dims are then latent channels per group)
    inference: str = "bottom_up"
    layer_hidden: tuple[int, ...] = ()  # MLP width per stochastic layer (empty: twice its units)
    layer_depth: int = 2  # hidden layers per conditional distribution
    log_scale_clamp: float = 0.0  # NVAE's soft clamp c*tanh(log_scale/c) on the hierarchy's Gaussians; 0 = off
    groups_per_scale: tuple[int, ...] = ()  # top_down: latent groups at the H/2 and H/4 scales (empty: half each)
    residual_channels: int = 32  # top_down: width of the residual stream
    cells: int = 1  # top_down: residual cells per latent group (decoder) and per scale (encoder)
    # p(x|z): factorized (every pixel independent given z: the networks' decoders), pixelcnn (autoregressive,
    # with network=conv or mlp; strong enough that a plain VAE can ignore z: posterior collapse), or gru (token
    # sequences, e.g. data.name=words, with a GRU encoder; model.likelihood=categorical)
    decoder: str = "factorized"
    pixelcnn: PixelCNNConfig = PixelCNNConfig()
    rnn: RNNConfig = RNNConfig()
    num_classes: int = 0  # model.likelihood=categorical: the vocabulary size of the token data (words: 28)
    # > 0: the posterior's scale is fixed so that its KL to N(0, I) is at least this many nats per latent unit
    # (a minimum rate in the spirit of the delta-VAE, Razavi et al. 2019; jaxvae.models.posteriors.CommittedRate)
    committed_rate: float = 0.0
    # none, cvae (conditional VAE: q(z|x,y), p(x|z,y) on the data's labels; jaxvae sample --label) or m2 (Kingma
    # et al. 2014's semi-supervised M2 with a classifier q(y|x); data.labels_per_class); MLP networks only
    conditional: str = "none"
    condition_classes: int = 10  # model.conditional: the number of classes of the labels (one-hot size)
    m2_alpha: float = 0.0  # m2: weight of the classifier's loss on labelled rows; 0: 0.1 * N_train / N_labelled


@dataclasses.dataclass(frozen=True)
class FreeBitsConfig:
    """``objective.name=free_bits``: a KL floor per group of dimensions (Kingma et al. 2016)."""

    nats: float = 0.0  # the floor, nats per group
    group: int = 1  # dimensions per group (must divide model.latent_dim)
    per_layer: bool = False  # a floor per latent group (layer of a hierarchy) instead of per `group` dimensions


@dataclasses.dataclass(frozen=True)
class CapacityConfig:
    """``objective.name=capacity``: ``gamma * |KL - C(t)|`` with C rising linearly to ``nats`` (Burgess et al.
    2018)."""

    nats: float = 25.0  # capacity reached at the end of `steps`
    steps: int = 10_000  # steps over which C rises linearly from 0 to nats
    gamma: float = 1000.0  # weight of |KL - C|


@dataclasses.dataclass(frozen=True)
class BetaTCVAEConfig:
    """``objective.name=beta_tcvae``: the KL split into index-code MI, total correlation and dimension-wise KL
    (Chen et al. 2018); ``objective.beta`` weights the total correlation."""

    alpha: float = 1.0  # weight of the index-code mutual information
    gamma: float = 1.0  # weight of the dimension-wise KL


@dataclasses.dataclass(frozen=True)
class InfoVAEConfig:
    """``objective.name=info_vae``: (1 - alpha) KL + (alpha + lambda - 1) MMD(q(z), p(z)) (Zhao et al. 2019)."""

    alpha: float = 0.0  # the paper's alpha: 0 keeps the full KL, 1 removes it
    mmd_weight: float = 1000.0  # lambda of the paper
    kernel: str = "imq"  # imq or rbf (jaxvae.objectives.discrepancy.KERNELS)


@dataclasses.dataclass(frozen=True)
class OuterSamplesConfig:
    """``objective.name=miwae`` / ``piwae``: ``outer`` groups of ``objective.num_samples`` importance samples
    each, MIWAE(M=outer, K=num_samples) (Rainforth et al. 2018, who use M = K = 8)."""

    outer: int = 8  # M, groups of importance samples whose bounds are averaged


@dataclasses.dataclass(frozen=True)
class CIWAEConfig:
    """``objective.name=ciwae``: beta ELBO + (1 - beta) IWAE on the same samples (Rainforth et al. 2018)."""

    beta: float = 0.5  # in [0, 1]: 1 is the ELBO, 0 IWAE


@dataclasses.dataclass(frozen=True)
class GecoConfig:
    """``objective.controller=geco``: a Lagrange multiplier on the reconstruction constraint (Rezende & Viola
    2018)."""

    tolerance: float = 30.0  # accepted reconstruction loss (nats per example)
    alpha: float = 0.99  # moving-average rate of the constraint
    step_size: float = 1e-2  # multiplier update speed


@dataclasses.dataclass(frozen=True)
class PIConfig:
    """``objective.controller=pi``: a PI controller that holds the KL at a set point (ControlVAE, Shao et al.
    2020); beta stays in [objective.beta_start, objective.beta]."""

    kl_target: float = 10.0  # KL set point (nats per example)
    kp: float = 0.01  # proportional gain (on the KL error in nats)
    ki: float = 1e-4  # integral gain


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """The loss, its KL weighting (see :mod:`jaxvae.objectives` and :mod:`jaxvae.objectives.schedules`), and one
    settings section per objective or controller that has settings of its own (``objective.capacity.nats``,
    ...)."""

    # see jaxvae.catalog.OBJECTIVES: elbo, iwae, free_bits, capacity, beta_tcvae, info_vae, and the IWAE
    # family and gradient estimators of jaxvae.objectives.estimators: miwae, ciwae, piwae, iwae_dreg, elbo_stl
    name: str = "elbo"
    controller: str = "none"  # none, geco, pi: a stateful controller sets beta instead of beta_schedule
    beta: float = 1.0  # final KL weight (the upper bound of beta for the PI controller)
    beta_schedule: str = "constant"  # constant, linear, sigmoid, cosine, cyclical
    beta_start: float = 0.0  # initial KL weight of an annealing schedule (the floor of cyclical)
    warmup_steps: int = 0  # ramp length for linear/sigmoid/cosine
    num_cycles: int = 4  # cyclical: number of cycles over the run
    cycle_ratio: float = 0.5  # cyclical: share of each cycle spent increasing
    num_samples: int = 1  # posterior samples per example (IWAE k)
    analytic_kl: bool = True  # the closed-form KL where one exists (else a Monte Carlo estimate)
    kl_balance: bool = False  # NVAE's KL balancing across latent groups during the warm-up (objective elbo)
    free_bits: FreeBitsConfig = FreeBitsConfig()
    capacity: CapacityConfig = CapacityConfig()
    beta_tcvae: BetaTCVAEConfig = BetaTCVAEConfig()
    info_vae: InfoVAEConfig = InfoVAEConfig()
    miwae: OuterSamplesConfig = OuterSamplesConfig()
    piwae: OuterSamplesConfig = OuterSamplesConfig()
    ciwae: CIWAEConfig = CIWAEConfig()
    geco: GecoConfig = GecoConfig()
    pi: PIConfig = PIConfig()


# The flat names of the objective settings before they moved into per-objective sections (config.json files of
# older runs, and commands written for them, keep working).
LEGACY_KEYS = {
    "objective.free_bits": "objective.free_bits.nats",
    "objective.free_bits_group": "objective.free_bits.group",
    "objective.capacity": "objective.capacity.nats",
    "objective.capacity_steps": "objective.capacity.steps",
    "objective.gamma": "objective.capacity.gamma",
    "objective.tc_alpha": "objective.beta_tcvae.alpha",
    "objective.tc_gamma": "objective.beta_tcvae.gamma",
    "objective.mmd_alpha": "objective.info_vae.alpha",
    "objective.mmd_lambda": "objective.info_vae.mmd_weight",
    "objective.mmd_kernel": "objective.info_vae.kernel",
    "objective.geco_tolerance": "objective.geco.tolerance",
    "objective.geco_alpha": "objective.geco.alpha",
    "objective.geco_step_size": "objective.geco.step_size",
    "objective.kl_target": "objective.pi.kl_target",
    "objective.pi_kp": "objective.pi.kp",
    "objective.pi_ki": "objective.pi.ki",
}


@dataclasses.dataclass(frozen=True)
class SpectralRegConfig:
    """``optimizer.spectral_reg``: NVAE's spectral regularization, weight * (sum of every weight matrix's largest
    singular value) added to the loss (Vahdat & Kautz 2020; jaxvae.objectives.regularizers)."""

    weight: float = 0.0  # lambda after the warm-up (NVAE on MNIST: 1e-2); 0 = off
    init_weight: float = 0.0  # lambda at step 0, annealed geometrically to `weight` (NVAE: 10); 0 = constant
    warmup_steps: int = 0  # length of that annealing (NVAE: the KL warm-up's)
    power_iterations: int = 1  # power-iteration steps per training step


@dataclasses.dataclass(frozen=True)
class PlateauConfig:
    """``optimizer.plateau``: scale the updates by ``factor`` when the training loss, averaged over each epoch, has
    not improved (relative tolerance ``rtol``) for ``patience`` epochs (optax.contrib.reduce_on_plateau)."""

    patience: int = 0  # epochs; 0 = off
    factor: float = 0.1  # new scale = scale * factor
    rtol: float = 1e-4  # relative improvement of the epoch loss that counts
    cooldown: int = 0  # epochs to wait after a reduction
    min_scale: float = 0.0  # the scale does not fall below this


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"  # adam, adamw or adamax (jaxvae.catalog.OPTIMIZERS)
    learning_rate: float = 1e-3  # the peak rate (schedules scale it)
    schedule: str = "constant"  # constant, cosine, warmup_cosine, iwae (the IWAE paper's 3^i epochs stages),
    # multistep (the rate times milestone_factor at each epoch of milestones: PyTorch's MultiStepLR)
    warmup_steps: int = 0  # warmup_cosine: steps of the linear warm-up from 0 to the peak rate
    milestones: tuple[int, ...] = ()  # multistep: epochs (pythae's scripts: 200,350,500,750,1000)
    milestone_factor: float = 0.1  # multistep: the rate's factor at each milestone (pythae's: 10^(-1/5))
    weight_decay: float = 0.0  # adamw only
    b1: float = 0.9  # Adam's first-moment decay
    b2: float = 0.999  # Adam's second-moment decay
    eps: float = 1e-8  # Adam's denominator epsilon
    grad_clip_norm: float = 0.0  # 0 disables clipping
    skip_threshold: float = 0.0  # skip updates whose gradient norm exceeds this (VDVAE); 0 disables
    ema_decay: float = 0.0  # evaluate an exponential moving average of the parameters (VDVAE: 0.9999); 0 = off
    max_consecutive_nonfinite: int = 20  # stop training after this many skipped updates (NaN/Inf or above
    # skip_threshold) in a row
    spectral_reg: SpectralRegConfig = SpectralRegConfig()
    plateau: PlateauConfig = PlateauConfig()


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig:
    """``train.early_stopping``: stop when the validation ELBO has not improved for ``patience`` epochs, and
    report the best validation's model (jaxvae.training.early_stopping)."""

    patience: int = 0  # epochs without a new best validation ELBO; 0 = off
    min_delta: float = 0.0  # nats the validation ELBO must rise by to count as an improvement


@dataclasses.dataclass(frozen=True)
class AggressiveConfig:
    """``train.aggressive``: aggressive inference-network training against posterior collapse (He et al. 2019,
    "Lagging Inference Networks"; jaxvae.training.aggressive): while the phase is on, each step first updates only
    the encoder, on fresh random batches, until its loss stops falling (at most ``max_inner`` updates), then only
    the decoder; the phase ends when the validation mutual information has not improved for ``patience`` epochs."""

    enabled: bool = False  # run the aggressive phase from the first step
    max_inner: int = 100  # encoder updates per step at most (the paper: 100)
    # The inner loop stops when the mean loss of a window of this many updates is above the previous window's
    # (the paper: 10).
    check_every: int = 10
    patience: int = 5  # epochs without a new best validation I(x; z) that end the phase (the paper: 5)
    min_delta: float = 0.0  # nats the validation I(x; z) must rise by to count as an improvement
    encoder_key: str = "encoder"  # top-level parameter key of the inference network (the rest is the decoder's)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 100  # examples per step (global: split over the mesh's data axis)
    epochs: int = 30  # passes over the training set (unless train.steps is set)
    steps: int | None = None  # total steps; overrides epochs when set
    seed: int = 0  # parameters and per-step randomness
    data_seed: int | None = None  # batch order and data splits/binarization; None = the same as seed
    # auto: scan when the data fits on the device, else host (host also for multi-process runs and for conv nets
    # with model.conv_impl=xla on CPU); scan; host
    loop: str = "auto"
    log_every: int = 50  # steps between metric records (and progress updates)
    eval_every: int = 0  # steps between validation passes; 0 = once per epoch
    checkpoint_every: int = 1000  # steps between checkpoints (rounded to a whole chunk); 0 = end only
    keep_checkpoints: int = 3  # the most recent checkpoints kept in checkpoints/
    # wall-time bound of one compiled call of training steps, sized from the measured step time, so that SIGTERM
    # or SIGINT is answered with a checkpoint within about this many seconds whatever one step costs; 0 = none
    max_chunk_seconds: float = 10.0
    device_data_limit_mb: int = 1024  # "auto" keeps a dataset on the device when it is below this size
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    aggressive: AggressiveConfig = AggressiveConfig()
    # the training program (jaxvae.training): empty = one player, the objective and optimizer above, training every
    # parameter; or MODULE:FUNCTION of a function (cfg, model, objective, optimizer) -> jaxvae.training.Program
    # (several players, state updates; jv.fit(..., program=...) records it here)
    program: str = ""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    num_samples: int = 1000  # importance samples for the IWAE log-likelihood in summary.json
    batch_size: int = 100  # examples per evaluation batch
    max_examples: int | None = None  # evaluate on a random subset of the test split (None = all)
    num_images: int = 64  # examples in reconstructions.png / samples.png


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    """The latent-health monitor (see :mod:`jaxvae.evaluation.monitor`)."""

    every: int = 200  # steps between checks (rounded up to the next metric record); 0 disables the monitor
    batch_size: int = 512  # size of the fixed held-out batch
    active_threshold: float = 0.01  # a unit is active when Cov_x(E_q[z_d]) exceeds this (Burda et al. 2016)
    min_active_units: int = 1  # warn when fewer units are active
    min_kl: float = 0.1  # warn when the total KL (nats) falls below this
    min_mi: float = 0.05  # warn when the mutual information (nats) falls below this


# The experiment trackers jaxvae.rundir.trackers implements (tests/test_trackers.py checks that the two agree).
TRACKER_NAMES = ("tensorboard", "mlflow", "wandb")


@dataclasses.dataclass(frozen=True)
class TrackConfig:
    """Experiment trackers (see :mod:`jaxvae.rundir.trackers`); they report the run, so a resumed run may change
    them."""

    backends: tuple[str, ...] = ("tensorboard",)  # any of tensorboard, mlflow, wandb (comma-separated), or none
    project: str = "jaxvae"  # the MLflow experiment and the W&B project
    run_name: str = ""  # the tracker run's name (default: the run directory's name)
    mlflow_uri: str = ""  # MLflow tracking URI (default: a local SQLite store, <workdir>/mlflow.db)
    wandb_mode: str = "offline"  # offline (files in <workdir>/wandb; `wandb sync` uploads them) or online


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The device mesh (see :mod:`jaxvae.sharding`): the batch is split over ``data``; parameters are replicated
    (data parallel) or split FSDP-style over ``data``."""

    shape: str = "auto"  # "auto" (all devices on the data axis), "8", "4x2", ...
    axis_names: tuple[str, ...] = ("data",)  # one per axis of shape; a 2-D shape defaults to data,model
    params: str = "replicated"  # replicated (data parallel) or fsdp (parameters + optimizer state sharded)


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    monitor: MonitorConfig = MonitorConfig()
    mesh: MeshConfig = MeshConfig()
    track: TrackConfig = TrackConfig()
    preset: str = "digits"


# ------------------------------------------------------------------------------------------------ presets

def _preset(**sections: Mapping[str, Any]) -> Config:
    cfg = Config()
    for section, values in sections.items():
        if section == "preset":
            cfg = dataclasses.replace(cfg, preset=values)
        else:
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})
    return cfg


PRESETS: dict[str, tuple[str, Config]] = {
    "digits": (
        "Embedded default: scikit-learn's 8x8 digits, MLP 64-256-128-8, Bernoulli on values in [0, 1], "
        "300 epochs. Trains in well under a minute on a laptop CPU, offline.",
        _preset(preset="digits", train=dict(epochs=300, batch_size=64, log_every=20, checkpoint_every=500),
                eval=dict(num_samples=1000)),
    ),
    "user-data": (
        "General-purpose start for your own data (--set data.name=PATH to a .npy/.npz file or an image folder; "
        "the default instead of digits when data.name is such a path and no --preset is given): the library "
        "defaults, MLP D-256-128-8, Bernoulli on values in [0, 1], batch 100, Adam 1e-3, 30 epochs, IWAE k=1000 "
        "on at most 1,000 test examples. Set model.likelihood for other data (e.g. gaussian).",
        _preset(preset="user-data", train=dict(epochs=30), eval=dict(max_examples=1000)),
    ),
    "mnist": (
        "MNIST, MLP 784-500-20, Bernoulli on grey values in [0, 1], batch 128, Adam 1e-3, 30 epochs "
        "(the PyTorch examples VAE).",
        _preset(preset="mnist", data=dict(name="mnist"),
                model=dict(latent_dim=20, hidden=(500,)),
                train=dict(batch_size=128, epochs=30, log_every=100, checkpoint_every=2000),
                eval=dict(num_samples=1000, max_examples=1000)),
    ),
    "binarized-mnist": (
        "Statically binarized MNIST (Larochelle's 50k/10k/10k), MLP 784-500-20, Bernoulli, batch 128, "
        "Adam 1e-3, 30 epochs (the Flax VAE example's setting).",
        _preset(preset="binarized-mnist", data=dict(name="binarized-mnist"),
                model=dict(latent_dim=20, hidden=(500,)),
                train=dict(batch_size=128, epochs=30, log_every=100, checkpoint_every=2000),
                eval=dict(num_samples=1000, max_examples=1000)),
    ),
    "mnist-dynamic": (
        "MNIST with dynamic binarization (re-sampled every epoch, the IWAE paper protocol), MLP 784-500-20.",
        _preset(preset="mnist-dynamic", data=dict(name="mnist", dynamic_binarization=True),
                model=dict(latent_dim=20, hidden=(500,)),
                train=dict(batch_size=128, epochs=30, log_every=100, checkpoint_every=2000),
                eval=dict(num_samples=1000, max_examples=1000)),
    ),
    "mnist-2layer": (
        "The IWAE paper's two-stochastic-layer model on dynamically binarized MNIST (Burda et al. 2016): "
        "784-(200,200)-100-(100,100)-50, tanh, bottom-up inference, IWAE bound with k=5, batch 20, Adam "
        "(eps 1e-4) at 1e-3, 30 epochs (the paper: 3,280 epochs with a decaying learning rate). IWAE k=5000 on "
        "1,000 test images.",
        _preset(preset="mnist-2layer", data=dict(name="mnist", dynamic_binarization=True),
                model=dict(network="hierarchical", latent_dims=(100, 50), layer_hidden=(200, 100), layer_depth=2,
                           activation="tanh"),
                objective=dict(name="iwae", num_samples=5),
                optimizer=dict(eps=1e-4),
                train=dict(batch_size=20, epochs=30, log_every=500, checkpoint_every=6000),
                eval=dict(num_samples=5000, max_examples=1000)),
    ),
    "mnist-ladder": (
        "A Ladder VAE on dynamically binarized MNIST (Sonderby et al. 2016): five stochastic layers 64-32-16-8-4 "
        "with MLPs of 512-256-128-64-32 units (two hidden layers each, leaky ReLU), precision-weighted top-down "
        "inference, ELBO with a linear KL warm-up over the first 10 epochs, batch 100, 30 epochs.",
        _preset(preset="mnist-ladder", data=dict(name="mnist", dynamic_binarization=True),
                model=dict(network="hierarchical", inference="ladder", latent_dims=(64, 32, 16, 8, 4),
                           layer_hidden=(512, 256, 128, 64, 32), layer_depth=2, activation="leaky_relu"),
                objective=dict(beta_schedule="linear", beta_start=0.0, warmup_steps=5000),
                train=dict(batch_size=100, epochs=30, log_every=100, checkpoint_every=2000),
                eval=dict(num_samples=1000, max_examples=1000)),
    ),
    "binarized-mnist-topdown": (
        "A small NVAE/VDVAE-style top-down residual hierarchy on statically binarized MNIST: four latent groups "
        "of 4 channels, two at 14x14 and two at 7x7, a 32-channel residual stream, Swish, NVAE's residual "
        "posterior and soft clamp (5), a linear KL warm-up over 3 epochs with KL balancing, Adamax 2e-3 "
        "(eps 1e-7), batch 100, 20 epochs (NVAE on MNIST: 400 epochs, 30% warm-up). IWAE k=1000 on 1,000 test "
        "images.",
        _preset(preset="binarized-mnist-topdown", data=dict(name="binarized-mnist"),
                model=dict(network="hierarchical", inference="top_down", latent_dims=(4, 4, 4, 4),
                           groups_per_scale=(2, 2), residual_channels=32, cells=1, activation="silu",
                           log_scale_clamp=5.0),
                objective=dict(beta_schedule="linear", beta_start=0.0, warmup_steps=1500, kl_balance=True),
                optimizer=dict(name="adamax", learning_rate=2e-3, eps=1e-7),
                train=dict(batch_size=100, epochs=20, log_every=100, checkpoint_every=1000),
                eval=dict(num_samples=1000, max_examples=1000)),
    ),
    "words": (
        "English words as character sequences (data.name=words, from Debian's wamerican; 17 tokens, vocabulary "
        "28): a GRU encoder and a GRU decoder (embedding 64, state 256, z fed to every step) with a 32-unit "
        "latent, categorical likelihood, Adam 1e-3 with gradient clipping at 5 (He et al. 2019), batch 64, 10 "
        "epochs; IWAE k=500 on 1,000 test words. A plain VAE with this decoder collapses: see the collapse lab.",
        _preset(preset="words", data=dict(name="words"),
                model=dict(decoder="gru", likelihood="categorical", num_classes=28, latent_dim=32),
                optimizer=dict(grad_clip_norm=5.0),
                train=dict(batch_size=64, epochs=10, log_every=100, checkpoint_every=2000),
                eval=dict(num_samples=500, max_examples=1000, num_images=16)),
    ),
    "dsprites": (
        "dSprites-style shapes generated on the published factor grid (737,280 binary 64x64 images; "
        "jaxvae.data.dsprites): convolutional VAE (32-64 channels), latent 10, Bernoulli, batch 64, Adam 1e-3, "
        "10 epochs. --set objective.beta=4 for a beta-VAE.",
        _preset(preset="dsprites", data=dict(name="dsprites"),
                model=dict(network="conv", latent_dim=10),
                train=dict(batch_size=64, epochs=10, log_every=500, checkpoint_every=10000),
                eval=dict(num_samples=1000, max_examples=1000)),
    ),
    "dsprites-small": (
        "The CPU-sized dSprites variant (46,080 binary 32x32 images, every 4th orientation and every 2nd "
        "position): convolutional VAE (32-64 channels), latent 10, Bernoulli, batch 64, 30 epochs.",
        _preset(preset="dsprites-small", data=dict(name="dsprites-small"),
                model=dict(network="conv", latent_dim=10),
                train=dict(batch_size=64, epochs=30, log_every=100, checkpoint_every=2000),
                eval=dict(num_samples=1000, max_examples=1000)),
    ),
    "fashion-mnist": (
        "Fashion-MNIST, convolutional VAE (32-64 channels), latent 16, Bernoulli on grey values.",
        _preset(preset="fashion-mnist", data=dict(name="fashion-mnist"),
                model=dict(network="conv", latent_dim=16),
                train=dict(batch_size=128, epochs=30, log_every=100, checkpoint_every=2000),
                eval=dict(num_samples=1000, max_examples=1000)),
    ),
    "frey": (
        "Frey faces (28x20, continuous), MLP 560-200-10, Gaussian likelihood with a learned global sigma.",
        _preset(preset="frey", data=dict(name="frey"),
                model=dict(latent_dim=10, hidden=(200,), likelihood="gaussian", likelihood_scale="learned"),
                train=dict(batch_size=100, epochs=200, log_every=50, checkpoint_every=1000),
                eval=dict(num_samples=1000)),
    ),
    "cifar10": (
        "CIFAR-10 (binary version), convolutional VAE, discretized logistic mixture on 8-bit values.",
        _preset(preset="cifar10", data=dict(name="cifar10", scale="uint8"),
                model=dict(network="conv", latent_dim=64, channels=(64, 128), conv_hidden=512,
                           likelihood="discretized_logistic_mixture", num_mixtures=5),
                train=dict(batch_size=128, epochs=50, log_every=100, checkpoint_every=2000),
                eval=dict(num_samples=100, max_examples=1000)),
    ),
}


def _closest(word: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def get_preset(name: str = "digits") -> Config:
    """The named preset (see :data:`PRESETS` or ``jaxvae presets``)."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}.{_closest(name, PRESETS)} "
                          f"Available presets: {', '.join(PRESETS)} (list them with `jaxvae presets`).")
    return PRESETS[name][1]


# ------------------------------------------------------------------------------------------ overrides

def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _parse_tuple(text: str, item_type: Any, key: str) -> tuple:
    """A comma-separated list (optionally in parentheses or brackets; ``""`` or ``()`` is the empty list) of
    values of ``item_type``, every item present: ``8,,4``, ``8,x`` and ``4x2`` are refused, never reinterpreted."""
    inner = text.strip()
    if len(inner) >= 2 and (inner[0], inner[-1]) in (("(", ")"), ("[", "]")):
        inner = inner[1:-1].strip()
    if not inner:
        return ()
    parts = [p.strip() for p in inner.split(",")]
    if len(parts) > 1 and parts[-1] == "" and text.strip()[:1] in "([":
        parts = parts[:-1]  # a one-item tuple written as Python writes it: (8,)
    what = {int: "integers", float: "numbers", str: "names"}.get(item_type, _type_name(item_type))
    example = {int: "100,50", float: "0.5,1.0", str: "a,b"}.get(item_type, "...")
    bad = [f"{p!r} (item {i + 1})" for i, p in enumerate(parts) if not _is_item(p, item_type)]
    if bad:
        one = {int: "an integer", float: "a number", str: "a name"}.get(item_type, "valid")
        verdict = f"is not {one}" if len(bad) == 1 else f"are not {what}"
        raise ConfigError(f"{key}={text!r}: expected a comma-separated list of {what}, e.g. {key}={example} (or "
                          f"{key}= for none); {', '.join(bad)} {verdict}.")
    return tuple(_parse_value(p, item_type, key) for p in parts)


def _is_item(text: str, item_type: Any) -> bool:
    if not text:
        return False
    if item_type is str:
        return "=" not in text and not any(c.isspace() for c in text)
    if item_type is int:
        return re.fullmatch(r"[+-]?\d+", text) is not None
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parses ``text`` as a value of the field type ``annotation`` (int, float, bool, str, tuples, Optional)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.strip().lower() in ("none", "null", ""):
            return None
        return _parse_value(text, args[0], key)
    if origin is tuple:
        return _parse_tuple(text, typing.get_args(annotation)[0], key)
    try:
        if annotation is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if annotation is int:
            as_float = float(text)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        if annotation is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected {annotation.__name__}.") from None
    return text


def _check_typed(value: Any, annotation: Any, key: str) -> Any:
    """A value given already typed (a Python mapping, a JSON config file): checked against the field's type, never
    converted between kinds (``8.5`` for an integer, ``"x"`` in a list of integers and a number for a list are
    refused); an integer is accepted for a float, a list for a tuple."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _check_typed(value, args[0], key)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r}: expected a list of {_type_name(item_type)} (e.g. [100, 50]), got "
                              f"{type(value).__name__}.")
        return tuple(_check_typed(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation in (bool, str) and type(value) is annotation:
        return value
    raise ConfigError(f"{key}={value!r}: expected {_type_name(annotation)}, got {type(value).__name__}.")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(annotation: Any) -> bool:
    return dataclasses.is_dataclass(annotation)


def canonical_key(key: str) -> str:
    """``key`` with an older flat name replaced by its current one (see :data:`LEGACY_KEYS`)."""
    return LEGACY_KEYS.get(key.strip(), key.strip())


def _replace_path(node: Any, path: list[str], value: Any, key: str) -> Any:
    """``node`` (a config dataclass) with the field at ``path`` set to ``value`` (strings parsed by type)."""
    types_ = _field_types(type(node))
    name = path[0]
    if name not in types_:
        where = f"'{key.rsplit('.', len(path))[0]}'" if len(path) < len(key.split(".")) else "the config"
        raise ConfigError(f"Unknown config key {key!r}.{_closest(key, all_keys())} "
                          f"Valid keys in {where}: {', '.join(types_)}.")
    annotation = types_[name]
    if len(path) > 1:
        if not _is_section(annotation):
            raise ConfigError(f"Unknown config key {key!r}: {name} is a setting, not a section.")
        return dataclasses.replace(node, **{name: _replace_path(getattr(node, name), path[1:], value, key)})
    if _is_section(annotation):
        fields = ", ".join(f"{key}.{f.name}" for f in dataclasses.fields(annotation))
        raise ConfigError(f"{key} is a section of settings, not a setting; set its keys: {fields}.")
    if isinstance(value, str):
        value = _parse_value(value, annotation, key)
    else:
        value = _check_typed(value, annotation, key)
    return dataclasses.replace(node, **{name: value})


def apply_overrides(cfg: Config, overrides: Iterable[str] | Mapping[str, Any], *,
                    components: Components | None = None) -> Config:
    """Returns ``cfg`` with ``"section.key=value"`` overrides applied (strings parsed by field type).

    Keys are dotted paths (``model.latent_dim``, ``objective.capacity.nats``); the older flat names of
    :data:`LEGACY_KEYS` are accepted. A mapping ``{"section.key": value}`` with already-typed values is accepted
    too. The result is validated (``components``: see :func:`validate`).

    >>> cfg = apply_overrides(get_preset("digits"), ["model.latent_dim=16", "objective.beta=4"])
    >>> cfg.model.latent_dim, cfg.objective.beta
    (16, 4.0)
    >>> apply_overrides(cfg, ["model.latnt_dim=2"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    jaxvae.errors.ConfigError: Unknown config key 'model.latnt_dim'. Did you mean 'model.latent_dim'? ...
    """
    items = overrides.items() if isinstance(overrides, Mapping) else (_split_override(o) for o in overrides)
    for key, value in items:
        key = canonical_key(key)
        path = key.split(".")
        if len(path) < 2 or path[0] == "preset" or not all(path):
            raise ConfigError(f"Unknown config key {key!r}.{_closest(key, all_keys())} "
                              "Keys look like 'model.latent_dim'; see `jaxvae config show` for all of them.")
        cfg = _replace_path(cfg, path, value, key)
    validate(cfg, components=components)
    return cfg


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"Override {text!r} is not of the form KEY=VALUE (e.g. model.latent_dim=16).")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _keys(cls: type, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        annotation = _field_types(cls)[f.name]
        out += _keys(annotation, f"{prefix}{f.name}.") if _is_section(annotation) else [f"{prefix}{f.name}"]
    return out


def all_keys() -> list[str]:
    """Every dotted config key, e.g. ``['data.name', 'data.dir', ..., 'objective.capacity.nats', ...]``."""
    return [k for k in _keys(Config, "") if k != "preset"]


# ----------------------------------------------------------------------------------------- validation

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


def __getattr__(name: str) -> Any:
    if name == "BUILTIN_COMPONENTS":  # jaxvae 0.1's JAX-free copy of the registries, now the catalog itself
        return catalog.components()
    raise AttributeError(f"module 'jaxvae.config' has no attribute {name!r}")


def data_seed(cfg: Config) -> int:
    """The seed of the batch order and data splits: ``train.data_seed``, or ``train.seed`` when unset."""
    return cfg.train.seed if cfg.train.data_seed is None else cfg.train.data_seed


def is_builder_reference(network: str) -> bool:
    """Whether ``model.network`` names a user builder ``MODULE:FUNCTION`` rather than a built-in network."""
    return ":" in network


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


def get_value(cfg: Config, key: str) -> Any:
    """The value of the dotted key ``key`` (e.g. ``"objective.capacity.nats"``) in ``cfg``."""
    node: Any = cfg
    for part in canonical_key(key).split("."):
        node = getattr(node, part)
    return node


def latent_size(cfg: Config) -> int | None:
    """The total number of latent units of the configured built-in network (all layers of a hierarchy); ``None``
    for the top-down hierarchy, whose groups are feature maps sized by the data's image shape."""
    if cfg.model.network != "hierarchical":
        return cfg.model.latent_dim
    return None if cfg.model.inference == "top_down" else sum(cfg.model.latent_dims)


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
            raise ConfigError(f"model.network={network!r} is not valid.{_closest(network, networks)} "
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
            raise ConfigError(f"{key}={value!r} is not valid.{_closest(str(value), options)} "
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


# ------------------------------------------------------------------------------------------------ JSON

def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_json(cfg: Config) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_dict(d: Mapping[str, Any], *, components: Components | None = None) -> Config:
    """Inverse of :func:`to_dict` (lists become tuples); unknown keys raise :class:`ConfigError`. Sections or
    keys left out keep the values of ``d["preset"]`` (a name of :data:`PRESETS`), else of the bare config."""
    preset = d.get("preset")
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise ConfigError(f"preset={preset!r} is not a preset.{_closest(str(preset), PRESETS)} Available presets: "
                          f"{', '.join(PRESETS)}.")
    cfg = get_preset(preset) if preset is not None else Config()
    cfg = dataclasses.replace(cfg, preset=d.get("preset", cfg.preset))
    flat: dict[str, Any] = {}

    def walk(prefix: str, values: Mapping[str, Any]) -> None:
        for field, value in values.items():
            if isinstance(value, Mapping):
                walk(f"{prefix}{field}.", value)
            else:
                flat[f"{prefix}{field}"] = tuple(value) if isinstance(value, list) else value

    for section, values in d.items():
        if section == "preset":
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"Config section {section!r} must be a mapping.")
        walk(f"{section}.", values)
    return apply_overrides(cfg, flat, components=components)


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """A config file as a dict: JSON (the format of a run's ``config.json``) or YAML (``.yaml``/``.yml``), all or
    some of the sections (``{"model": {"latent_dim": 16}, "train": {"steps": 2000}}``), optionally with
    ``"preset"``. Raises :class:`ConfigError` naming the file for a missing file or a syntax error."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror}). Give the path of a JSON or YAML "
                          "config file, e.g. a run's config.json.") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"--config {path}: not valid YAML{where} ({getattr(e, 'problem', e)}).") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config {path}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}). "
                              "YAML files need the suffix .yaml or .yml.") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"--config {path}: the file must hold a mapping of sections (e.g. {{\"model\": "
                          f"{{\"latent_dim\": 16}}}}), not a {type(data).__name__}.")
    return dict(data)


def from_file(path: str | os.PathLike, *, preset: str | None = None,
              components: Components | None = None) -> Config:
    """The config of a file (:func:`read_file`) on top of its ``"preset"`` (or ``preset``; the two may not
    disagree), validated; every error names the file."""
    data = read_file(path)
    named = data.get("preset")
    if preset is not None and named is not None and named != preset:
        raise ConfigError(f"--config {path} is for preset {named!r}, and --preset {preset} names another; leave "
                          "out one of them.")
    if preset is not None:
        data["preset"] = preset
    try:
        return from_dict(data, components=components)
    except ConfigError as e:
        raise ConfigError(f"{e} (in {path})") from None


def from_saved(path: str | os.PathLike) -> Config:
    """The config in a run directory's ``config.json``; a damaged file or a refused value says where it came
    from (:class:`ConfigError`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): this run "
                          "directory's config is damaged. Restore it, or start a new run with another --workdir."
                          ) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a jaxvae config: this run directory's "
                          "config is damaged. Restore it, or start a new run with another --workdir.")
    try:
        return from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{e} This value comes from {path}, the run's saved config: correct it there, or start "
                          "a new run with another --workdir.") from None


class KeyDescription(NamedTuple):
    """One config key as :func:`describe_keys` documents it."""

    key: str  # dotted, e.g. "model.latent_dim"
    type: str  # e.g. "int", "tuple[int, ...]", "str or None"
    default: str  # the bare config's default as written on the command line
    meaning: str  # the comment that documents the field in this module


def _field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` of a config dataclass, read from this module's source: the comment lines right above a
    field without a comment on its own line; for a field with one, that comment. Comment lines right below a
    field's comment that ends with a comma continue it; other comment lines above a field with its own comment
    are a note on the section."""
    import inspect
    import io
    import tokenize

    source = inspect.getsource(cls)
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out: dict[str, str] = {}
    above: list[str] = []  # comment lines since the last code line
    previous: str | None = None  # the field on the last code line, if it has a comment of its own
    for number, line in enumerate(source.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            above.append(comments[number])
            continue
        match = re.match(r"\s+(\w+): [^=]+=", line)
        name = match.group(1) if match else None
        if above and previous is not None and out[previous].endswith(","):
            out[previous] += " " + " ".join(above)
            above = []
        if name is not None:
            out[name] = comments[number] if number in comments else " ".join(above)
        previous = name if name is not None and number in comments else None
        above = []
    return out


def describe_keys() -> list[KeyDescription]:
    """Every config key with its type, default and meaning (``jaxvae config keys``; the documentation's config
    reference is generated from this)."""
    out: list[KeyDescription] = []

    def walk(cls: type, prefix: str) -> None:
        comments, hints = _field_comments(cls), typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            default = field.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{field.name}.")
                continue
            kind = hints[field.name]
            kind = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else (
                "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default))
            out.append(KeyDescription(f"{prefix}{field.name}", kind.replace(" | ", " or "), shown,
                                      comments.get(field.name, "")))

    for section in dataclasses.fields(Config):
        if dataclasses.is_dataclass(section.default):
            walk(type(section.default), f"{section.name}.")
    return out


# Settings that change how a run is reported or paced, not what it computes: resuming a run with other values is
# allowed.
REPORTING_ONLY = ("track.", "train.max_chunk_seconds")


def diff(a: Config, b: Config, *, ignore: Sequence[str] = ()) -> list[str]:
    """Human-readable differences ``'key: a -> b'`` between two configs (keys starting with a prefix in
    ``ignore`` left out)."""
    out = []
    for key in all_keys():
        if key.startswith(tuple(ignore)):
            continue
        va, vb = get_value(a, key), get_value(b, key)
        if va != vb:
            out.append(f"{key}: {va!r} -> {vb!r}")
    return out
