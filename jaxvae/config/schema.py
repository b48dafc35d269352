"""The config schema: a tree of frozen dataclasses, one settings section per component with settings of
its own (the comments beside the fields are the documentation: :mod:`jaxvae.config.describe`), and
the helpers that walk it."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable
from typing import Any


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


def type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def is_section(annotation: Any) -> bool:
    return dataclasses.is_dataclass(annotation)


def canonical_key(key: str) -> str:
    """``key`` with an older flat name replaced by its current one (see :data:`LEGACY_KEYS`)."""
    return LEGACY_KEYS.get(key.strip(), key.strip())


def _keys(cls: type, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        annotation = field_types(cls)[f.name]
        out += _keys(annotation, f"{prefix}{f.name}.") if is_section(annotation) else [f"{prefix}{f.name}"]
    return out


def all_keys() -> list[str]:
    """Every dotted config key, e.g. ``['data.name', 'data.dir', ..., 'objective.capacity.nats', ...]``."""
    return [k for k in _keys(Config, "") if k != "preset"]


def data_seed(cfg: Config) -> int:
    """The seed of the batch order and data splits: ``train.data_seed``, or ``train.seed`` when unset."""
    return cfg.train.seed if cfg.train.data_seed is None else cfg.train.data_seed


def is_builder_reference(network: str) -> bool:
    """Whether ``model.network`` names a user builder ``MODULE:FUNCTION`` rather than a built-in network."""
    return ":" in network


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

def closest_hint(word: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""
