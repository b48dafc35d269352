r"""The model protocol: a VAE-like model owns its forward pass and returns the terms of its bound.

Everything downstream (objectives, the IWAE evaluator, the monitor, diagnostics, samplers, the training engine)
reads only :class:`ModelOutput`, so a two-layer hierarchy, a flow posterior or a user's own Flax module trains,
evaluates and is diagnosed without changes there.

**The protocol** (:class:`Model`, an ``nnx.Module`` with abstract methods):

* ``forward(x [B, *E], key, num_samples=K) -> ModelOutput``: the three log-densities ``[K, B]``
  (:math:`\log p(x|z)`, :math:`\log q(z|x)`, :math:`\log p(z)`, each summed over its dimensions), the latents as
  named groups ``{name: [K, B, D_g]}``, the analytic KL per group ``[B, D_g]`` where it exists (else ``None``),
  and per group the posterior and prior distributions (:class:`~jaxvae.distributions.Distribution`);
* ``prior_sample(key, n) -> {name: [n, D_g]}``: latents drawn from the generative model;
* ``decode(z: {name: [..., D_g]}) -> out [..., *E, P]``: the likelihood's raw parameters;
* attributes ``likelihood`` (a :class:`~jaxvae.distributions.likelihoods.Likelihood`) and ``event_shape``;
* optional: ``posteriors(x, key)`` (default: from ``forward``), ``prior_distribution()`` (the unconditional
  prior of a single-group model, or ``None``), ``reconstruct(x, key)``.

:class:`VAE` implements it for one diagonal-Gaussian latent group ``"z"`` with any encoder, decoder and prior.

**Training path** (Flax NNX performance guide): :class:`PureModel` holds the ``GraphDef`` of ONE ``nnx.split``
and exposes pure functions of ``params`` (a nested dict of arrays) that merge the module inside the traced
function, so they work under plain ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

**Training and evaluation modes** (NNX's convention): what acts in training only (``nnx.Dropout``, the word
dropout of :mod:`jaxvae.models.recurrent`) is switched off by the standard attribute ``deterministic``, which
``Module.eval()`` / ``Module.train()`` / ``nnx.view`` set (jaxvae uses :func:`set_mode`). A :class:`PureModel`
keeps the module's graph as built (NNX's default: training mode) and also its evaluation graph;
:meth:`PureModel.evaluation` and :meth:`PureModel.training` return the two views (same parameters). Every
evaluation entry point of jaxvae (IWAE, ELBO evaluation, diagnostics, samplers, the aggressive-training MI)
evaluates ``model.evaluation()``; an objective trains ``model.training()``.

Analysis tools that work in one latent space (GMM sampler, traversals, holes) use the *flat* view: the groups
concatenated in their order, ``[..., sum_g D_g]`` (:meth:`PureModel.encode`, :meth:`PureModel.decode`).

Example::

    vae = jv.VAE.mlp(event_shape=(784,), latent_dim=16, likelihood=jv.likelihoods.Bernoulli(),
                     rngs=nnx.Rngs(0))
    model, params = jv.split(vae)
    out = jax.jit(model.forward, static_argnums=3)(params, x, jax.random.key(0), 5)   # out.log_px_z [5, B]
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.distributions import kl as kl_lib  # noqa: F401  (registers the closed-form KLs)
from jaxvae.distributions.base import DiagonalGaussian, Distribution, TransformedDistribution, analytic_kl_per_dim
from jaxvae.errors import ConfigError
from jaxvae.models import nets
from jaxvae.models import priors as priors_lib

Array = jax.Array
Params = dict[str, Any]
Latents = dict[str, Array]


class ModelOutput(NamedTuple):
    """One stochastic pass through a model for a batch, ``K`` posterior samples per example (a pytree).

    Attributes:
      log_px_z: :math:`\\log p(x \\mid z_k)`, ``[K, B]``.
      log_qz_x: :math:`\\log q(z_k \\mid x)`, ``[K, B]`` (all groups; a flow includes its log-determinant).
      log_pz: :math:`\\log p(z_k)`, ``[K, B]`` (all groups).
      z: the latents by group, ``{name: [K, B, D_g]}`` (insertion order is the group order).
      kl_terms: analytic :math:`\\mathrm{KL}(q \\| p)` per group and dimension ``{name: [B, D_g] or None}``
        (``None`` where the pair has no closed form; for a conditional group, at the first sample).
      posteriors: per group the posterior, ``batch [B]`` (a conditional group: given the first sample, or, as
        the hierarchies of :mod:`jaxvae.models.hierarchy` do, moment-matched over the K samples of its parents).
      priors: per group the prior (batch ``()`` for an unconditional group, ``[B]`` for a conditional one).
      decoder_out: the likelihood's raw parameters ``[K, B, *E, P]`` (``None`` if the model does not expose
        them).
      log_q_groups, log_p_groups: optional per-group terms of ``log_qz_x`` and ``log_pz``, ``{name: [K, B]}``
        (hierarchies give them, so that groups without a closed-form KL get a Monte Carlo one per group).
      aux_loss: optional ``[B]``: a loss term of the model's own that every objective adds (batch mean) to what
        it minimises, outside the bound (M2's classifier loss, :mod:`jaxvae.models.conditional`).
      state: the model's non-gradient variables after this pass (its ``nnx.BatchStat``-s and other variables
        that are not ``nnx.Param``, as a nested dict), filled by :meth:`PureModel.forward` for models that have
        some (``None`` otherwise); the training step carries them in ``TrainState.model_state``.
    """

    log_px_z: Array
    log_qz_x: Array
    log_pz: Array
    z: Mapping[str, Array]
    kl_terms: Mapping[str, Array | None]
    posteriors: Mapping[str, Distribution]
    priors: Mapping[str, Distribution]
    decoder_out: Array | None = None
    log_q_groups: Mapping[str, Array] | None = None
    log_p_groups: Mapping[str, Array] | None = None
    aux_loss: Array | None = None
    state: Params | None = None

    @property
    def log_weights(self) -> Array:
        """The importance log-weights :math:`\\log p(x|z) + \\log p(z) - \\log q(z|x)`, ``[K, B]``."""
        return self.log_px_z + self.log_pz - self.log_qz_x

    def kl_per_dim(self) -> Array | None:
        """Analytic KL per latent dimension, groups concatenated, ``[B, sum_g D_g]``; ``None`` unless every group
        has one."""
        terms = list(self.kl_terms.values())
        if not terms or any(t is None for t in terms):
            return None
        return terms[0] if len(terms) == 1 else jnp.concatenate(terms, axis=-1)

    def kl_per_group(self) -> dict[str, Array] | None:
        """KL per group, ``{name: [B]}``: analytic where the group has a closed form, else the Monte Carlo mean
        over the K samples of ``log_q_groups - log_p_groups``; ``None`` when a group has neither."""
        out = {}
        for g, t in self.kl_terms.items():
            if t is not None:
                out[g] = jnp.sum(t, axis=-1)
            elif self.log_q_groups is not None and self.log_p_groups is not None:
                out[g] = jnp.mean(self.log_q_groups[g] - self.log_p_groups[g], axis=0)
            else:
                return None
        return out


class Model(nnx.Module, abc.ABC):
    """The protocol every model implements (see the module docstring). Subclass it; build submodules in
    ``__init__(..., rngs)``; check the result with :func:`jaxvae.testing.check_model`.

    Attributes:
      likelihood: the decoder's :class:`~jaxvae.distributions.likelihoods.Likelihood` (static, not learned).
      event_shape: the shape of one example.
    """

    likelihood: Any
    event_shape: tuple[int, ...]

    @abc.abstractmethod
    def forward(self, x: Array, key: Array, num_samples: int = 1) -> ModelOutput:
        """Encode ``x [B, *E]``, draw ``num_samples`` latents per example, decode and score them."""

    @abc.abstractmethod
    def prior_sample(self, key: Array, n: int) -> Latents:
        """``n`` draws of every latent group from the generative model, ``{name: [n, D_g]}``."""

    @abc.abstractmethod
    def decode(self, z: Mapping[str, Array]) -> Array:
        """Latents ``{name: [..., D_g]}`` to the likelihood's raw parameters ``[..., *E, P]``."""

    def log_likelihood(self, z: Mapping[str, Array], x: Array) -> Array:
        """``log p(x|z)`` summed over the event, ``[...]`` for ``z {name: [..., D_g]}`` and ``x`` broadcastable
        to ``[..., *E]``. Default: the likelihood of :meth:`decode`; autoregressive decoders score ``x`` itself."""
        return self.likelihood.log_prob(self.decode(z), x, event_ndim=len(self.event_shape))

    def decode_mean(self, z: Mapping[str, Array], key: Array) -> Array:
        """What an image of the latents shows, ``[..., *E]``. Default: the likelihood's mean of :meth:`decode`
        (``key`` unused); an autoregressive decoder draws an ancestral sample with ``key``."""
        del key
        return self.likelihood.mean(self.decode(z))

    def prior_sample_tempered(self, key: Array, n: int, temperature: float = 1.0) -> Latents:
        """``n`` draws at a sampling temperature (each conditional's scale times ``temperature``). The default
        supports only ``temperature=1`` (plain :meth:`prior_sample`); models override it (hierarchies: ancestral
        sampling with one temperature for every layer, or one per layer)."""
        if temperature == 1.0:
            return self.prior_sample(key, n)
        raise ConfigError(f"Tempered sampling needs a diagonal Gaussian or Gaussian-mixture prior, or a model "
                          f"that implements prior_sample_tempered; {type(self).__name__} has neither. Sample it "
                          "with temperature 1, or implement prior_sample_tempered(key, n, temperature).")

    def posteriors(self, x: Array, key: Array) -> dict[str, Distribution]:
        """Per group the posterior for ``x [B, *E]`` (a conditional group: given one sample of its parents)."""
        return dict(self.forward(x, key, 1).posteriors)

    def prior_distribution(self) -> Distribution | None:
        """The unconditional prior over the (single) latent group, or ``None`` (hierarchies, implicit priors)."""
        return None

    def reconstruct(self, x: Array, key: Array) -> Array:
        """The likelihood mean for one posterior sample per example, ``[B, *E]`` (what reconstruction images
        show)."""
        out = self.forward(x, key, 1)
        if out.decoder_out is None:
            raise NotImplementedError(f"{type(self).__name__}.forward returns no decoder_out; override "
                                      "reconstruct().")
        return self.likelihood.mean(out.decoder_out[0])


def _single_group(z: Mapping[str, Array] | Array, name: str) -> Array:
    if isinstance(z, Mapping):
        if set(z) != {name}:
            raise ValueError(f"This model has one latent group {name!r}; got groups {sorted(z)}.")
        return z[name]
    return z


class VAE(Model):
    """A single-latent-group VAE: ``encoder`` -> reparameterized ``z`` -> ``decoder`` -> ``likelihood``.

    Args:
      encoder: module ``x [..., *E] -> Distribution [..., D]`` (e.g. a diagonal Gaussian).
      decoder: module ``z [..., D] -> out [..., *E, P]`` with ``P = likelihood.num_outputs``.
      likelihood: a :class:`jaxvae.distributions.likelihoods.Likelihood` (static, not learned; learned global
        scalars live in the decoder).
      prior: a :class:`jaxvae.models.priors.Prior`.
      event_shape: shape of one example.
    """

    group = "z"

    def __init__(self, encoder: nnx.Module, decoder: nnx.Module, likelihood: Any, prior: priors_lib.Prior,
                 event_shape: Sequence[int]):
        if not isinstance(prior, priors_lib.Prior):
            raise TypeError(f"prior must be a jaxvae.models.priors.Prior, got {type(prior).__name__}; wrap a "
                            "custom prior in a Prior subclass whose __call__ returns a jaxvae Distribution.")
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior
        self.event_shape = tuple(event_shape)
        self.latent_dim = prior.latent_dim

    @classmethod
    def mlp(cls, event_shape: Sequence[int], latent_dim: int, likelihood: Any, *,
            hidden: Sequence[int] = (512, 256), activation: str = "relu", prior: priors_lib.Prior | None = None,
            posterior: str = "diagonal", flow_steps: int = 4, iaf_hidden: int = 0, householder: int = 0,
            rngs: nnx.Rngs) -> VAE:
        """MLP encoder ``prod(E) -> hidden -> 2D`` and the mirrored decoder; standard normal prior by default.

        ``posterior``: ``diagonal``, or a normalizing flow on it (``planar``, ``radial``, ``iaf``, ``sylvester``;
        :class:`jaxvae.models.flows.FlowEncoder` with ``flow_steps``, ``iaf_hidden``, ``householder``)."""
        if posterior == "diagonal":
            encoder = nets.MLPEncoder(event_shape, latent_dim, hidden, activation=activation, rngs=rngs)
        else:
            from jaxvae.models import flows

            encoder = flows.FlowEncoder(event_shape, latent_dim, hidden, flow=posterior, steps=flow_steps,
                                        activation=activation, iaf_hidden=iaf_hidden, householder=householder,
                                        rngs=rngs)
        decoder = nets.MLPDecoder(
            latent_dim, event_shape, tuple(reversed(hidden)), num_outputs=likelihood.num_outputs,
            num_global_outputs=likelihood.num_global_outputs, activation=activation, rngs=rngs)
        return cls(encoder, decoder, likelihood, prior or priors_lib.StandardNormal(latent_dim), event_shape)

    @classmethod
    def conv(cls, event_shape: Sequence[int], latent_dim: int, likelihood: Any, *,
             channels: Sequence[int] = (32, 64), hidden: int = 256, activation: str = "relu",
             conv_impl: str = "auto", prior: priors_lib.Prior | None = None, rngs: nnx.Rngs) -> VAE:
        """Convolutional encoder/decoder for ``(H, W, C)`` images with H, W divisible by 4.

        ``conv_impl``: ``auto`` (matmul-based convolutions on CPU, native ones on GPU/TPU), ``xla`` or ``matmul``;
        see :mod:`jaxvae.models.convops`. It changes the program, not the parameters."""
        encoder = nets.ConvEncoder(event_shape, latent_dim, channels, hidden, activation=activation,
                                   conv_impl=conv_impl, rngs=rngs)
        decoder = nets.ConvDecoder(
            latent_dim, event_shape, tuple(reversed(channels)), hidden, num_outputs=likelihood.num_outputs,
            num_global_outputs=likelihood.num_global_outputs, activation=activation, conv_impl=conv_impl,
            rngs=rngs)
        return cls(encoder, decoder, likelihood, prior or priors_lib.StandardNormal(latent_dim), event_shape)

    def encode(self, x: Array) -> Distribution:
        """``x [..., *E] -> q(z|x) [..., D]``."""
        return self.encoder(x)

    def prior_distribution(self) -> Distribution:
        return self.prior(self.encoder)

    def forward(self, x: Array, key: Array, num_samples: int = 1) -> ModelOutput:
        q = self.encode(x)  # [B, D]
        p = self.prior_distribution()
        z, log_qz_x = q.sample_and_log_prob(key, num_samples)  # [K, B, D], [K, B]
        out = self.decoder_outputs(z, x, jax.random.fold_in(key, 1))  # [K, B, *E, P]
        log_px_z = self.likelihood.log_prob(out, x, event_ndim=len(self.event_shape))  # [K, B]
        g = self.group
        return ModelOutput(log_px_z, log_qz_x, p.log_prob(z), {g: z}, {g: analytic_kl_per_dim(q, p)}, {g: q},
                           {g: p}, out)

    def posteriors(self, x: Array, key: Array) -> dict[str, Distribution]:
        del key
        return {self.group: self.encode(x)}

    def prior_sample(self, key: Array, n: int) -> Latents:
        return {self.group: self.prior_distribution().sample(key, n)}

    def decoder_outputs(self, z: Array, x: Array, key: Array | None = None) -> Array:
        """The likelihood's raw parameters ``[..., *E, P]`` for latents ``z [..., D]`` scoring ``x`` (a
        factorized decoder ignores ``x``; an autoregressive one reads it: teacher forcing). ``key``: the forward
        pass's randomness for the decoder (word dropout of :mod:`jaxvae.models.recurrent` in training), ``None``
        when scoring (:meth:`log_likelihood`)."""
        del x, key
        return self.decoder(z)

    def log_likelihood(self, z: Mapping[str, Array] | Array, x: Array) -> Array:
        out = self.decoder_outputs(_single_group(z, self.group), x)
        return self.likelihood.log_prob(out, x, event_ndim=len(self.event_shape))

    def decode(self, z: Mapping[str, Array] | Array) -> Array:
        return self.decoder(_single_group(z, self.group))

    def reconstruct(self, x: Array, key: Array | None = None) -> Array:
        """:meth:`decode_mean` at the posterior mean, ``[B, *E]``; for a flow posterior (no closed-form mean), at
        the flow's image of its base mean."""
        q = self.encode(x)
        z = q.transform(q.base.mean())[0] if isinstance(q, TransformedDistribution) else q.mean()
        return self.decode_mean({self.group: z}, key)


# ---------------------------------------------------------------------------------------------- flat latents

LatentGroups = tuple[tuple[str, int], ...]  # ((name, D_g), ...) in group order


def flatten_latents(z: Mapping[str, Array], groups: LatentGroups) -> Array:
    """``{name: [..., D_g]} -> [..., sum_g D_g]`` in group order."""
    parts = [z[name] for name, _ in groups]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def unflatten_latents(z: Array, groups: LatentGroups) -> Latents:
    """``[..., sum_g D_g] -> {name: [..., D_g]}``."""
    total = sum(d for _, d in groups)
    if z.shape[-1] != total:
        raise ValueError(f"Flat latents have {z.shape[-1]} dimensions; this model's groups "
                         f"{dict(groups)} have {total}.")
    out, start = {}, 0
    for name, d in groups:
        out[name] = z[..., start:start + d]
        start += d
    return out


def flatten_posteriors(posteriors: Mapping[str, Distribution], groups: LatentGroups,
                       what: str = "This analysis") -> DiagonalGaussian:
    """The per-group diagonal Gaussian posteriors as one ``DiagonalGaussian [B, sum_g D_g]``. A flow posterior
    (:class:`~jaxvae.distributions.TransformedDistribution`) contributes its base Gaussian (so active units, the
    ex-post mixture and outlier scores of a flow model are those of the base distribution); any other kind of
    posterior is a clear error naming what needs Gaussian statistics."""
    posteriors = {g: q.base if isinstance(q, TransformedDistribution) else q for g, q in posteriors.items()}
    bad = {g: type(q).__name__ for g, q in posteriors.items() if not isinstance(q, DiagonalGaussian)}
    if bad:
        raise ConfigError(f"{what} needs diagonal Gaussian posteriors (their means and scales), but the model's "
                          f"latent groups have {bad}. Use the Monte Carlo tools (jv.iwae_log_likelihood, the ELBO "
                          "and the samplers from the prior), or give the model a diagonal Gaussian posterior.")
    parts = [posteriors[name] for name, _ in groups]
    if len(parts) == 1:
        return parts[0]
    return DiagonalGaussian(jnp.concatenate([q.loc for q in parts], axis=-1),
                            jnp.concatenate([q.log_scale for q in parts], axis=-1))


# -------------------------------------------------------------------------------------------------- pure view


def _check_model(model: Any) -> Model:
    if not isinstance(model, Model):
        raise ConfigError(
            f"The model builder returned a {type(model).__name__}, not a jaxvae model. Return a jv.VAE(encoder, "
            "decoder, likelihood, prior, event_shape) built from your own modules, or subclass jv.Model and "
            "implement forward, prior_sample and decode (docs/models.md: 'Bring your own model').")
    return model


@dataclasses.dataclass(frozen=True)
class PureModel:
    """Pure functions of ``params`` for one model architecture (hashable; safe to close over in ``jax.jit``).

    Build it with :func:`split` from a module, or with :meth:`from_builder` from a function ``rngs -> Model``
    (then :meth:`init` creates fresh parameters from a key, e.g. inside ``jax.jit`` with ``out_shardings``).

    Attributes:
      graphdef: the module structure of one ``nnx.split`` (as built: NNX's training mode, unless the module was
        put in evaluation mode before).
      likelihood, event_shape: the model's.
      groups: ``((name, D_g), ...)``, the latent groups in order.
      training_graphdef, evaluation_graphdef: the graph in training / evaluation mode (:func:`set_mode`), or
        ``None`` where it is ``graphdef`` itself (a model without training-only behaviour has ``None`` for both).
        Use :meth:`training` and :meth:`evaluation`.
    """

    graphdef: nnx.GraphDef
    likelihood: Any
    event_shape: tuple[int, ...]
    groups: LatentGroups
    builder: Callable[[nnx.Rngs], Model] | None = dataclasses.field(default=None, compare=False)
    training_graphdef: nnx.GraphDef | None = None
    evaluation_graphdef: nnx.GraphDef | None = None
    state_paths: frozenset[tuple[Any, ...]] = frozenset()

    @classmethod
    def from_builder(cls, builder: Callable[[nnx.Rngs], Model]) -> PureModel:
        """Traces ``builder`` abstractly (no FLOPs, no memory) to get the graph definition and the groups."""
        abstract = nnx.eval_shape(lambda: _check_model(builder(nnx.Rngs(0))))
        graphdef, state = nnx.split(abstract)
        groups = _latent_groups(graphdef, state)
        return cls(graphdef, abstract.likelihood, tuple(abstract.event_shape), groups, builder,
                   *_mode_graphdefs(graphdef, state), state_paths=_state_paths(state))

    def evaluation(self) -> PureModel:
        """The evaluation view: the same model in evaluation mode (:func:`set_mode`, as ``Module.eval()``:
        ``deterministic=True``, so no dropout and no word dropout; ``use_running_average=True``), with the same
        parameters. Idempotent and cheap (``self`` when the model has no training-only behaviour); every
        evaluation entry point of jaxvae calls it."""
        if self.evaluation_graphdef is None:
            return self
        return dataclasses.replace(self, graphdef=self.evaluation_graphdef, evaluation_graphdef=None,
                                   training_graphdef=self.graphdef if self.training_graphdef is None
                                   else self.training_graphdef)

    def training(self) -> PureModel:
        """The training view (as ``Module.train()``: ``deterministic=False``), what an objective trains; ``self``
        when it is already that view."""
        if self.training_graphdef is None:
            return self
        return dataclasses.replace(self, graphdef=self.training_graphdef, training_graphdef=None,
                                   evaluation_graphdef=self.graphdef if self.evaluation_graphdef is None
                                   else self.evaluation_graphdef)

    @property
    def latent_dim(self) -> int:
        """Total latent dimensions over all groups."""
        return sum(d for _, d in self.groups)

    def init(self, key: Array) -> Params:
        """Fresh parameters from ``key`` (a pure function of the key; jit it to control placement)."""
        if self.builder is None:
            raise ValueError("PureModel.init needs a builder: create it with PureModel.from_builder.")
        _, state = nnx.split(self.builder(nnx.Rngs(params=key)))
        return nnx.to_pure_dict(state)

    def abstract_params(self) -> Params:
        """Shapes and dtypes of the parameters (``jax.ShapeDtypeStruct`` leaves), computed without FLOPs."""
        return jax.eval_shape(self.init, jax.random.key(0))

    def merge(self, params: Params) -> Model:
        """The NNX module for ``params`` (inside a traced function this is free)."""
        return nnx.merge(self.graphdef, params)

    def forward(self, params: Params, x: Array, key: Array, num_samples: int = 1) -> ModelOutput:
        """See :meth:`Model.forward`. ``params`` are all the model's variables; for a model with non-gradient
        variables (:attr:`state_paths`), the output's ``state`` holds their values after the pass (a batch
        normalization's running statistics in training mode)."""
        module = self.merge(params)
        out = module.forward(x, key, num_samples)
        if self.state_paths:
            out = out._replace(state=self.split_state(nnx.to_pure_dict(nnx.state(module)))[1])
        return out

    def split_state(self, variables: Params) -> tuple[Params, Params]:
        """``(params, state)``: the variables that are ``nnx.Param`` (what gradients train) and the others
        (:attr:`state_paths`: statistics updated by the forward pass), each a nested dict; ``state`` is ``{}``
        and ``params`` the same tree for a model without non-gradient variables. :func:`merge_trees` joins
        them again."""
        if not self.state_paths:
            return variables, {}
        state, params = partition_tree(variables, self.state_paths.__contains__)
        return params, state

    def posteriors(self, params: Params, x: Array, key: Array | None = None) -> dict[str, Distribution]:
        return self.merge(params).posteriors(x, jax.random.key(0) if key is None else key)

    def encode(self, params: Params, x: Array, key: Array | None = None) -> DiagonalGaussian:
        """The flat posterior ``DiagonalGaussian [B, sum_g D_g]`` (for a single-group VAE: q(z|x) itself;
        conditional groups given one sample drawn with ``key``)."""
        return flatten_posteriors(self.posteriors(params, x, key), self.groups, "Encoding to posterior means")

    def prior_distribution(self, params: Params) -> Distribution | None:
        """The unconditional prior of a single-group model, else ``None``."""
        return self.merge(params).prior_distribution()

    def prior_sample_groups(self, params: Params, key: Array, n: int) -> Latents:
        """``n`` latents of every group from the generative model, ``{name: [n, D_g]}``."""
        return self.merge(params).prior_sample(key, n)

    def prior_sample_tempered(self, params: Params, key: Array, n: int, temperature: Any = 1.0) -> Array:
        """Flat latents ``[n, sum_g D_g]`` from :meth:`Model.prior_sample_tempered`."""
        return flatten_latents(self.merge(params).prior_sample_tempered(key, n, temperature), self.groups)

    def prior_sample(self, params: Params, key: Array, n: int) -> Array:
        """``n`` flat latents from the generative model, ``[n, sum_g D_g]``."""
        return flatten_latents(self.prior_sample_groups(params, key, n), self.groups)

    def decode(self, params: Params, z: Mapping[str, Array] | Array) -> Array:
        """Latents (a group dict, or flat ``[..., sum_g D_g]``) to raw likelihood parameters ``[..., *E, P]``."""
        groups = z if isinstance(z, Mapping) else unflatten_latents(z, self.groups)
        return self.merge(params).decode(groups)

    def decode_mean(self, params: Params, z: Mapping[str, Array] | Array, key: Array | None = None) -> Array:
        """What sample images of latents ``z`` show, ``[..., *E]`` (:meth:`Model.decode_mean`: the likelihood's
        mean; an autoregressive decoder's ancestral sample drawn with ``key``, default ``key(0)``)."""
        groups = z if isinstance(z, Mapping) else unflatten_latents(z, self.groups)
        return self.merge(params).decode_mean(groups, jax.random.key(0) if key is None else key)

    def log_likelihood(self, params: Params, z: Mapping[str, Array] | Array, x: Array) -> Array:
        """``log p(x|z)`` summed over the event (:meth:`Model.log_likelihood`)."""
        groups = z if isinstance(z, Mapping) else unflatten_latents(z, self.groups)
        return self.merge(params).log_likelihood(groups, x)

    def reconstruct(self, params: Params, x: Array, key: Array | None = None) -> Array:
        """``[B, *E]``: see :meth:`Model.reconstruct`."""
        return self.merge(params).reconstruct(x, jax.random.key(0) if key is None else key)


def _mode_graphdefs(graphdef: nnx.GraphDef, state: Any) -> tuple[nnx.GraphDef | None, nnx.GraphDef | None]:
    """``(training, evaluation)`` graph definitions of the module ``(graphdef, state)``, each ``None`` where it
    equals ``graphdef``. Built on fresh module objects merged from the state (the user's module is never
    mutated); ``state`` may be abstract."""
    views = []
    for training in (True, False):
        view, _ = nnx.split(set_mode(nnx.merge(graphdef, state), training=training))
        views.append(None if view == graphdef else view)
    return views[0], views[1]


def set_mode(module: nnx.Module, *, training: bool) -> nnx.Module:
    """Sets ``module`` and its submodules to NNX's training or evaluation mode in place and returns it: what
    ``Module.train()`` / ``Module.eval()`` do (``deterministic`` and ``use_running_average`` = ``not training``),
    but only on those attributes that are such flags (``bool`` or ``None``): ``Module.eval()`` also overwrites a
    submodule that happens to be *named* ``deterministic`` (:class:`jaxvae.models.hierarchy.LadderVAE`'s bottom-up
    networks are)."""
    for _, sub in nnx.iter_modules(module):
        for name in ("deterministic", "use_running_average"):
            if hasattr(sub, name) and (getattr(sub, name) is None or isinstance(getattr(sub, name), bool)):
                setattr(sub, name, not training)
    return module


def _latent_groups(graphdef: nnx.GraphDef, state: Any) -> LatentGroups:
    def shapes(params):
        return nnx.merge(graphdef, params).prior_sample(jax.random.key(0), 1)

    out = jax.eval_shape(shapes, state)
    if not isinstance(out, Mapping) or not out:
        raise ConfigError(f"prior_sample must return a non-empty dict {{group name: [n, D_g]}}; got "
                          f"{type(out).__name__}.")
    groups = []
    for name, s in out.items():
        if len(s.shape) != 2 or s.shape[0] != 1:
            raise ConfigError(f"prior_sample(key, n) must return [n, D_g] per group; group {name!r} has shape "
                              f"{s.shape} for n=1.")
        groups.append((str(name), int(s.shape[1])))
    return tuple(groups)


PureVAE = PureModel  # the name before the model protocol (kept for existing code)


def split(model: Model) -> tuple[PureModel, Params]:
    """Splits a model ONCE into its pure view and its parameters (a nested dict of arrays). The pure view keeps
    the module's mode (NNX's training mode unless ``model.eval()`` was called) and knows the other
    (:meth:`PureModel.evaluation`, :meth:`PureModel.training`); ``model`` itself is not changed."""
    graphdef, state = nnx.split(_check_model(model))
    return (PureModel(graphdef, model.likelihood, tuple(model.event_shape), _latent_groups(graphdef, state), None,
                      *_mode_graphdefs(graphdef, state), state_paths=_state_paths(state)),
            nnx.to_pure_dict(state))


def _state_paths(state: nnx.State) -> frozenset[tuple[Any, ...]]:
    """The paths of a module's variables that are not ``nnx.Param`` (its non-gradient state)."""
    return frozenset(tuple(path) for path, leaf in nnx.to_flat_state(state)
                     if not isinstance(leaf, nnx.Param)
                     and not issubclass(getattr(leaf, "type", object), nnx.Param))


def partition_tree(tree: Mapping[Any, Any], keep: Callable[[tuple[Any, ...]], bool], prefix: tuple[Any, ...] = ()
                   ) -> tuple[Params, Params]:
    """Splits a nested dict into ``(selected, rest)`` by the path of each leaf (``keep(("encoder", "w"))``); a
    branch with no leaf of one side is left out of that side, an empty branch stays in ``rest``.
    :func:`merge_trees` of the two is the tree again (the same pytree structure)."""
    selected, rest = {}, {}
    for k, v in tree.items():
        path = (*prefix, k)
        if isinstance(v, Mapping):
            s, r = partition_tree(v, keep, path)
            if s:
                selected[k] = s
            if r or not s:
                rest[k] = r
        elif keep(path):
            selected[k] = v
        else:
            rest[k] = v
    return selected, rest


def merge_trees(*trees: Mapping[Any, Any]) -> Params:
    """The union of nested dicts with disjoint leaves (the inverse of :func:`partition_tree`)."""
    out: dict[Any, Any] = {}
    for tree in trees:
        for k, v in tree.items():
            if k not in out:
                out[k] = dict(v) if isinstance(v, Mapping) else v
            elif isinstance(v, Mapping) and isinstance(out[k], Mapping):
                out[k] = merge_trees(out[k], v)
            else:
                raise ValueError(f"merge_trees: {k!r} is a leaf in more than one tree.")
    return out


def count_params(params: Params) -> int:
    """Total number of scalars in ``params``."""
    return sum(math.prod(jnp.shape(p)) for p in jax.tree.leaves(params))


def params_dtype(params: Params) -> Any:
    """The floating dtype of the parameters (the promotion of their floating leaves; float32 when there are
    none): the dtype data is cast to when the model reads it."""
    floats = [leaf for leaf in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]
    return jnp.result_type(*floats) if floats else jnp.dtype(jnp.float32)
