r"""Conditional and semi-supervised VAEs: the conditional VAE and Kingma et al.'s M2.

**Batches that carry a condition.** A conditional model reads its examples together with their labels (or any
side input), so its batches are pytrees rather than arrays:

* :class:`Labeled` ``(x [N, *E], y [N])``: examples with an integer class per example (``-1``: unknown), or a
  float side input ``y [N, S]``;
* :class:`SemiSupervised` ``(x, xl, yl)``: M2's training rows, each an example ``x`` whose label is not used,
  paired with a labelled example ``(xl, yl)`` (see :func:`condition_dataset`).

Both are :class:`~jaxvae.data.batches.Batch`-es (defined in :mod:`jaxvae.data.batches`): pytrees whose every leaf
has the examples on its first axis, which the engine moves leaf by leaf (``take``, ``num_examples``) like any
dataset; ``images`` gives the examples themselves (what a likelihood scores and an image grid shows).

**The conditional VAE** (:class:`ConditionalVAE`; Sohn et al. 2015, "Learning Structured Output Representation
using Deep Conditional Generative Models", with the label-independent prior :math:`p(z) = \mathcal{N}(0, I)` of
Kingma et al. 2014): :math:`q(z|x, y)` and :math:`p(x|z, y)` read the one-hot label concatenated to their input.
Its ``forward`` returns the terms of the bound on :math:`\log p(x|y)`, so the IWAE evaluator estimates
:math:`\log p(x|y)`.

**M2** (:class:`M2VAE`; Kingma, Rezende, Mohamed & Welling 2014, "Semi-supervised Learning with Deep Generative
Models", Sec. 3.1.2): a classifier :math:`q(y|x)` beside :math:`q(z|x,y)`, :math:`p(x|y,z)`, :math:`p(y)`
uniform over the ``C`` classes. For a labelled example the bound is

.. math:: -\mathcal{L}(x, y) = \mathbb{E}_{q(z|x,y)}[\log p(x|y,z) + \log p(y) + \log p(z) - \log q(z|x,y)],

for an unlabelled one the label is marginalised exactly (a sum over the ``C`` classes, eq. 7):

.. math:: -\mathcal{U}(x) = \sum_y q(y|x)\,(-\mathcal{L}(x, y)) + \mathcal{H}(q(y|x)),

and the classifier also learns from the labels, :math:`\alpha \cdot (-\log q(y_l|x_l))` (eq. 9). A training row
(:class:`SemiSupervised`) returns the sum of both bounds as its ``[K, B]`` terms and the classifier term as
``ModelOutput.aux_loss``, which every objective adds to its loss. Evaluation batches (:class:`Labeled` with
``y = -1``) draw the label from :math:`q(y|x)` with the latent, an importance sampler of :math:`(y, z)`, so the
IWAE evaluator estimates :math:`\log p(x)`.

Latents without a condition (the flat view that sample grids, interpolations and the ex-post samplers use) are
decoded with the classes cycling along their first axis (``z[i]`` gets class ``i mod C``): a grid of samples shows
every class. Give the condition explicitly as a group ``{"z": z, "y": labels}`` (``jaxvae sample --label``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.data.batches import (  # noqa: F401 (map_images: its 0.1 home)
    Labeled,
    SemiSupervised,
    images,
    map_images,
    num_examples,
)
from jaxvae.distributions.base import analytic_kl_per_dim
from jaxvae.errors import ConfigError, DataError
from jaxvae.models import nets
from jaxvae.models import priors as priors_lib
from jaxvae.models.protocol import VAE, Latents, ModelOutput

Array = jax.Array

#: ``model.conditional`` choices.
KINDS = ("none", "cvae", "m2")


# ------------------------------------------------------------------------------------------- conditioned batches

# ---------------------------------------------------------------------------------------------- the datasets

def _train_labels(ds: Any) -> np.ndarray:
    if not ds.labels or ds.labels.get("train") is None:
        raise ConfigError(f"model.conditional needs class labels, and the dataset {ds.name} has none. Use a "
                          "labelled dataset (digits, mnist, fashion-mnist, or an .npz with train_labels).")
    return np.asarray(ds.labels["train"])


def labelled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` examples of every class, drawn without replacement with ``seed`` (the
    balanced labelled subset of Kingma et al. 2014). A class with fewer examples is a :class:`ConfigError`."""
    rng = np.random.default_rng([seed, 7])
    picks = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < per_class:
            raise ConfigError(f"data.labels_per_class={per_class}, but class {c} has only {len(rows)} training "
                              f"examples; use data.labels_per_class={len(rows)} or less.")
        picks.append(rng.choice(rows, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def condition_dataset(ds: Any, kind: str, num_classes: int, *, labels_per_class: int = 0, seed: int = 0) -> Any:
    """The dataset whose splits are the model's conditioned batches (``ds`` unchanged; ``labels`` stay the true
    classes of every split).

    * ``cvae``: every split is :class:`Labeled` with its classes.
    * ``m2``: the training split is :class:`SemiSupervised`: row ``i`` is training example ``i`` (its label
      unused) paired with labelled example ``i mod L`` of the ``L = labels_per_class * C`` labelled ones
      (:func:`labelled_subset`; ``0``: every training example is labelled and paired with itself). A batch of a
      shuffled epoch therefore holds as many labelled examples as unlabelled ones, drawn afresh each epoch, as
      M2 implementations do with a labelled and an unlabelled loader. Validation and test are
      :class:`Labeled` with ``y = -1``: the model sees no label there, and the test classification error uses
      ``ds.labels``.
    """
    if kind not in KINDS[1:]:
        raise ConfigError(f"model.conditional={kind!r} is not valid; choose one of {KINDS}.")
    labels = {s: np.asarray(ds.labels[s]) if ds.labels and ds.labels.get(s) is not None else None
              for s in ("train", "valid", "test")}
    train_y = _train_labels(ds)
    for split, y in labels.items():
        if y is not None and len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ConfigError(f"The {split} labels of {ds.name} take the classes {int(y.min())}..{int(y.max())}, "
                              f"outside 0..{num_classes - 1}; set model.condition_classes={int(y.max()) + 1}.")
    out = {}
    if kind == "cvae":
        for split in ("train", "valid", "test"):
            x = ds.split(split)
            y = labels[split]
            if y is None:
                if len(x):
                    raise ConfigError(f"model.conditional=cvae needs labels for every split; {ds.name} has none "
                                      f"for {split}.")
                y = np.zeros((0,), np.int32)
            out[split] = Labeled(x, y.astype(np.int32))
    else:
        if labels_per_class:
            keep = labelled_subset(train_y, labels_per_class, seed)
        else:
            keep = np.arange(len(train_y))
        pair = keep[np.arange(len(train_y)) % len(keep)]
        out["train"] = SemiSupervised(ds.train, ds.train[pair], train_y[pair].astype(np.int32))
        for split in ("valid", "test"):
            x = ds.split(split)
            out[split] = Labeled(x, np.full((len(x),), -1, np.int32))
    new = object.__new__(type(ds))
    new.__dict__.update(ds.__dict__)
    for split, batch in out.items():
        object.__setattr__(new, split, batch)
    return new


def split_examples(ds: Any, split: str) -> Any:
    """The examples of a split of a (possibly conditioned) dataset, as a plain array."""
    return images(ds.split(split))


# --------------------------------------------------------------------------------------------------- models

def _flat(x: Array, event_ndim: int) -> Array:
    return x.reshape(*x.shape[:x.ndim - event_ndim], -1)


class ConditionalVAE(VAE):
    """The conditional VAE: ``q(z|x, y)`` and ``p(x|z, y)`` MLPs on the input with the condition concatenated,
    ``p(z)`` the ``prior`` (label-independent). Batches are :class:`Labeled`.

    Args:
      event_shape, latent_dim, likelihood: as for :meth:`jaxvae.VAE.mlp`.
      num_classes: ``C``, the number of classes (integer labels are one-hot coded), or the size ``S`` of a
        float side input.
      hidden, activation: the MLPs' widths (the decoder mirrors them) and nonlinearity.
    """

    def __init__(self, event_shape: Sequence[int], latent_dim: int, likelihood: Any, num_classes: int, *,
                 hidden: Sequence[int] = (512, 256), activation: str = "relu",
                 prior: priors_lib.Prior | None = None, rngs: nnx.Rngs):
        if num_classes < 1:
            raise ConfigError(f"A conditional model needs num_classes >= 1, got {num_classes}.")
        event_shape = tuple(event_shape)
        encoder = nets.MLPEncoder((math.prod(event_shape) + num_classes,), latent_dim, hidden,
                                  activation=activation, rngs=rngs)
        decoder = nets.MLPDecoder(latent_dim + num_classes, event_shape, tuple(reversed(hidden)),
                                  num_outputs=likelihood.num_outputs,
                                  num_global_outputs=likelihood.num_global_outputs, activation=activation,
                                  rngs=rngs)
        super().__init__(encoder, decoder, likelihood, prior or priors_lib.StandardNormal(latent_dim), event_shape)
        self.num_classes = int(num_classes)

    # -- the condition
    def condition(self, y: Array) -> Array:
        """``[..., C]``: one-hot integer classes (``-1``: all zeros) or a float side input as it is."""
        y = jnp.asarray(y)
        if jnp.issubdtype(y.dtype, jnp.integer):
            return jax.nn.one_hot(y, self.num_classes, dtype=jnp.float32)
        if y.shape[-1:] != (self.num_classes,):
            raise DataError(f"A float side input must have {self.num_classes} features; got shape {y.shape}.")
        return y.astype(jnp.result_type(y.dtype, jnp.float32))  # a float64 side input stays float64

    def _batch(self, batch: Any) -> Labeled:
        if not isinstance(batch, Labeled):
            raise DataError(f"{type(self).__name__} reads examples with their labels (a jaxvae.models.conditional."
                            f"Labeled batch), got {type(batch).__name__}. Train it with model.conditional set, or "
                            "wrap the data: Labeled(x, y).")
        return batch

    def condition_of(self, x: Any) -> Array:
        """The classes ``[B]`` (or side inputs) that condition a batch's decoding."""
        return self._batch(x).y

    def encode_given(self, x: Array, c: Array) -> Any:
        """``q(z|x, y)`` for examples ``x [..., *E]`` and coded conditions ``c [..., C]``."""
        x = _flat(x, len(self.event_shape))
        c = jnp.broadcast_to(c, (*x.shape[:-1], c.shape[-1]))
        return self.encoder(jnp.concatenate([x, c], axis=-1))

    def decode_given(self, z: Array, c: Array) -> Array:
        """The likelihood's raw parameters for ``z [..., D]`` under coded conditions ``c`` (broadcast)."""
        c = jnp.broadcast_to(c, (*z.shape[:-1], c.shape[-1]))
        return self.decoder(jnp.concatenate([z, c], axis=-1))

    def _default_condition(self, z: Array) -> Array:
        classes = jnp.arange(z.shape[0]) % self.num_classes
        return self.condition(jnp.broadcast_to(classes.reshape(-1, *([1] * (z.ndim - 2))), z.shape[:-1]))

    def _split_latents(self, z: Mapping[str, Array] | Array) -> tuple[Array, Array]:
        if isinstance(z, Mapping):
            extra = set(z) - {self.group, "y"}
            if extra or self.group not in z:
                raise ValueError(f"A conditional model's latents are {{'{self.group}': z, 'y': condition}}; got "
                                 f"{sorted(z)}.")
            zz = z[self.group]
            return zz, (self.condition(z["y"]) if "y" in z else self._default_condition(zz))
        return z, self._default_condition(z)

    # -- the protocol
    def forward(self, x: Any, key: Array, num_samples: int = 1) -> ModelOutput:
        batch = self._batch(x)
        c = self.condition(batch.y)
        q = self.encode_given(batch.x, c)
        p = self.prior_distribution()
        z, log_qz_x = q.sample_and_log_prob(key, num_samples)  # [K, B, D]
        out = self.decode_given(z, c)
        log_px_z = self.likelihood.log_prob(out, batch.x, event_ndim=len(self.event_shape))
        g = self.group
        return ModelOutput(log_px_z, log_qz_x, p.log_prob(z), {g: z}, {g: analytic_kl_per_dim(q, p)}, {g: q},
                           {g: p}, out)

    def encode(self, x: Any) -> Any:
        batch = self._batch(x)
        return self.encode_given(batch.x, self.condition(batch.y))

    def posteriors(self, x: Any, key: Array) -> dict[str, Any]:
        del key
        return {self.group: self.encode(x)}

    def decode(self, z: Mapping[str, Array] | Array) -> Array:
        zz, c = self._split_latents(z)
        return self.decode_given(zz, c)

    def log_likelihood(self, z: Mapping[str, Array] | Array, x: Any) -> Array:
        batch = self._batch(x)
        zz = z[self.group] if isinstance(z, Mapping) else z
        out = self.decode_given(zz, self.condition(batch.y))
        return self.likelihood.log_prob(out, batch.x, event_ndim=len(self.event_shape))

    def decoder_outputs(self, z: Array, x: Any, key: Array | None = None) -> Array:
        del key
        return self.decode_given(z, self.condition(self._batch(x).y))

    def reconstruct(self, x: Any, key: Array | None = None) -> Array:
        batch = self._batch(x)
        z = self.encode(batch).mean()
        return self.likelihood.mean(self.decode_given(z, self.condition(batch.y)))


class M2VAE(ConditionalVAE):
    """Kingma et al.'s (2014) M2: a classifier ``q(y|x)`` and a :class:`ConditionalVAE` over ``(x, y)`` with
    ``p(y)`` uniform; ``alpha`` weighs the classifier's loss on the labelled examples (see the module docs).

    Batches: :class:`SemiSupervised` rows in training, :class:`Labeled` in evaluation (``y = -1``: the label is
    drawn from ``q(y|x)``; ``y >= 0``: observed, the bound is on :math:`\\log p(x, y)`).
    """

    def __init__(self, event_shape: Sequence[int], latent_dim: int, likelihood: Any, num_classes: int, *,
                 alpha: float = 1.0, hidden: Sequence[int] = (512, 256), classifier_hidden: Sequence[int] = (),
                 activation: str = "relu", rngs: nnx.Rngs):
        super().__init__(event_shape, latent_dim, likelihood, num_classes, hidden=hidden, activation=activation,
                         rngs=rngs)
        self.classifier = nets.MLP([math.prod(self.event_shape), *(classifier_hidden or hidden), num_classes],
                                   activation=activation, rngs=rngs)
        self.alpha = float(alpha)

    def classify(self, x: Array) -> Array:
        """``log q(y|x)``, ``[..., C]``, for examples ``x [..., *E]``."""
        return jax.nn.log_softmax(self.classifier(_flat(x, len(self.event_shape))), axis=-1)

    def _terms(self, x: Array, c: Array, key: Array, num_samples: int) -> tuple[Array, ...]:
        """``log p(x|y,z), log q(z|x,y), log p(z) + log p(y)``, ``[K, ...]``, and ``z``, ``q``."""
        q = self.encode_given(x, c)
        z, log_q = q.sample_and_log_prob(key, num_samples)
        log_px = self.likelihood.log_prob(self.decode_given(z, c), x, event_ndim=len(self.event_shape))
        log_p = self.prior_distribution().log_prob(z) - math.log(self.num_classes)
        return log_px, log_q, log_p, z, q

    def forward(self, x: Any, key: Array, num_samples: int = 1) -> ModelOutput:
        if isinstance(x, SemiSupervised):
            return self._train_forward(x, key, num_samples)
        batch = self._batch(x)
        log_qy = self.classify(batch.x)  # [B, C]
        observed = batch.y >= 0
        drawn = jax.random.categorical(jax.random.fold_in(key, 2), log_qy,
                                       shape=(num_samples, num_examples(batch)))
        y = jnp.where(observed, batch.y, drawn)  # [K, B]
        xk = jnp.broadcast_to(batch.x, (num_samples, *batch.x.shape))
        log_px, log_q, log_p, z, q = self._terms(xk, self.condition(y), key, 1)  # [1, K, B]
        log_q_y = jnp.take_along_axis(jnp.broadcast_to(log_qy, (num_samples, *log_qy.shape)), y[..., None],
                                      axis=-1)[..., 0]
        log_q_y = jnp.where(observed, 0.0, log_q_y)  # [K, B]
        g = self.group
        q0 = jax.tree.map(lambda a: a[0], q)  # the posterior given the first label drawn
        return ModelOutput(log_px[0], log_q[0] + log_q_y, log_p[0], {g: z[0]}, {g: None}, {g: q0},
                           {g: self.prior_distribution()}, None)

    def _train_forward(self, batch: SemiSupervised, key: Array, num_samples: int) -> ModelOutput:
        C = self.num_classes
        # Unlabelled: every class at once, [C, B, ...]; the label's expectation is exact (eq. 7).
        eye = jnp.eye(C, dtype=jnp.float32)[:, None, :]  # [C, 1, C]
        xc = jnp.broadcast_to(batch.x, (C, *batch.x.shape))
        log_px, log_q, log_p, _, _ = self._terms(xc, eye, key, num_samples)  # [K, C, B]
        log_qy = self.classify(batch.x).T  # [C, B]
        qy = jnp.exp(log_qy)
        u_px = jnp.sum(qy * log_px, axis=1)  # [K, B]
        u_p = jnp.sum(qy * log_p, axis=1)
        u_q = jnp.sum(qy * (log_q + log_qy), axis=1)  # the entropy of q(y|x) enters through log q(y|x)
        # Labelled partner: the bound on log p(x, y) and the classifier's loss.
        cl = self.condition(batch.yl)
        l_px, l_q, l_p, z, q = self._terms(batch.xl, cl, jax.random.fold_in(key, 3), num_samples)
        ce = -jnp.take_along_axis(self.classify(batch.xl), batch.yl[:, None], axis=-1)[:, 0]
        g = self.group
        return ModelOutput(u_px + l_px, u_q + l_q, u_p + l_p, {g: z}, {g: None}, {g: q},
                           {g: self.prior_distribution()}, None, aux_loss=self.alpha * ce)

    def condition_of(self, x: Any) -> Array:
        """The given labels, and the classifier's most likely class where ``y = -1`` (or for every row of a
        :class:`SemiSupervised` batch, whose ``x`` is unlabelled)."""
        batch = x if isinstance(x, Labeled) else Labeled(images(x), jnp.full((num_examples(x),), -1, jnp.int32))
        return jnp.where(batch.y >= 0, batch.y, jnp.argmax(self.classify(batch.x), axis=-1))

    def encode(self, x: Any) -> Any:
        """``q(z|x, y)`` with the given label, or the classifier's most likely one where ``y = -1``."""
        return self.encode_given(images(x), self.condition(self.condition_of(x)))

    def log_likelihood(self, z: Mapping[str, Array] | Array, x: Any) -> Array:
        raise NotImplementedError("M2 scores (x, y) pairs through forward(); log p(x|z) alone needs a label: "
                                  "use decode_given(z, condition(y)) with the likelihood.")

    def reconstruct(self, x: Any, key: Array | None = None) -> Array:
        c = self.condition(self.condition_of(x))
        return self.likelihood.mean(self.decode_given(self.encode_given(images(x), c).mean(), c))


def classification_error(model: Any, params: Any, x: np.ndarray, labels: np.ndarray, *,
                         batch_size: int = 1000) -> float:
    """The share of examples ``x [N, *E]`` whose most likely class under an :class:`M2VAE`'s ``q(y|x)`` is not
    ``labels [N]``."""
    model = model.evaluation()
    module = model.merge(params)
    if not isinstance(module, M2VAE):
        raise ConfigError(f"Classification error needs an M2 model (model.conditional=m2), not "
                          f"{type(module).__name__}.")
    predict = jax.jit(lambda p, xb: jnp.argmax(model.merge(p).classify(xb), axis=-1))
    wrong = 0
    for i in range(0, len(x), batch_size):
        wrong += int(np.sum(np.asarray(predict(params, x[i:i + batch_size])) != labels[i:i + batch_size]))
    return wrong / max(len(x), 1)


def grid_classes(cfg: Any) -> int:
    """The number of classes a run's sample grids cycle through, one column each (0: not conditional)."""
    return cfg.model.condition_classes if cfg.model.conditional != "none" else 0


def given(model: Any, params: Any, z: Array, x: Any) -> Any:
    """Flat latents ``z [..., D]`` to decode under the condition of the example ``x`` (one row of a conditioned
    batch: its label, or for M2 without one the classifier's most likely class); ``z`` itself for an
    unconditioned ``x``. Traced code: interpolations and traversals of one example."""
    if not isinstance(x, (Labeled, SemiSupervised)):
        return z
    module = model.merge(params)
    return latents_with_label(z, module.condition_of(x)[0])


def latents_with_label(z: Array, label: int | Array) -> Latents:
    """Flat single-group latents ``z [..., D]`` with the condition ``label`` for every row, as a group dict."""
    return {"z": z, "y": jnp.broadcast_to(jnp.asarray(label, jnp.int32), z.shape[:-1])}
