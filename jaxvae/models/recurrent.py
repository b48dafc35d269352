r"""Recurrent VAEs for token sequences: a GRU encoder and a GRU decoder
:math:`p(x \mid z) = \prod_t p(x_t \mid x_{<t}, z)`, with word dropout.

The model of Bowman et al. (2016, "Generating Sentences from a Continuous Space") with the GRU of Cho et al.
(2014) in place of their LSTM, and the conditioning of He et al. (2019, "Lagging Inference Networks and Posterior
Collapse in Variational Autoencoders"): the decoder's first hidden state is ``tanh(W z + b)`` and ``z`` is also
concatenated to the input of every step. A recurrent decoder models text well without ``z``, so a plain VAE with
it collapses (KL and mutual information near 0): this is the text half of the collapse lab
(``python -m benchmarks collapse``).

**Sequences** (:mod:`jaxvae.data.text`): ``x [..., L]`` token ids, the text's tokens, one end-of-sequence token
(1), then padding (0). The decoder adds a start token (``V``) and an unknown token (``V + 1``) to the data's ``V``.

**Teacher forcing**: step ``t`` reads the previous token (the start token at ``t = 0``) and predicts ``x_t``, so
the log-likelihood is exact and one pass (a ``jax.lax.scan`` over the positions). The categorical likelihood
scores padding 0 (:class:`jaxvae.distributions.likelihoods.Categorical`), and position ``t`` depends only on
``x_{<t}``, so what follows the end token never changes the likelihood (tested against a step-by-step reference).

**Word dropout** (Bowman et al. 2016, Section 3.2): during training each input token after the start token is
replaced by the unknown token with probability ``word_dropout``, independently, so the decoder cannot lean on the
prefix alone and must read ``z``. It changes training only: it acts when the decoder is not ``deterministic``
(NNX's training mode, the default of a built module; ``Module.eval()`` or ``nnx.view(..., deterministic=True)``
switch it off, as for ``nnx.Dropout``), so evaluation (validation ELBO, IWAE, the monitor, sampling: every
evaluation entry point uses :meth:`jaxvae.models.protocol.PureModel.evaluation`) reads the full inputs. It draws
its mask from the forward pass's key, so a resumed run draws the same masks.

**Sampling** is ancestral (one step per position, token ``t`` drawn with ``fold_in(key, t)``; padding after the
end token); :meth:`RecurrentVAE.decode_mean` decodes greedily (the most likely token at each step), which is
what reconstructions and interpolations show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.data.text import EOS, PAD
from jaxvae.distributions.base import DiagonalGaussian
from jaxvae.errors import ConfigError
from jaxvae.models import priors as priors_lib
from jaxvae.models.autoregressive import AutoregressiveVAE
from jaxvae.models.protocol import _single_group

Array = jax.Array

__all__ = ["GRUDecoder", "GRUEncoder", "RecurrentVAE", "word_dropout_inputs"]


def _flat_tokens(x: Array) -> tuple[Array, tuple[int, ...]]:
    return jnp.round(x).astype(jnp.int32).reshape(-1, x.shape[-1]), x.shape[:-1]


def _embed(embed: nnx.Embed, tokens: Array) -> Array:
    """The embedding rows of ``tokens``, ``[..., E]``, in the table's own dtype (``nnx.Embed`` casts them to the
    dtype it was built with, float32, which broke float64 models: their GRU scans mixed float32 and float64)."""
    return jnp.take(embed.embedding[...], tokens, axis=0)


class GRUEncoder(nnx.Module):
    """Token ids ``x [..., L]`` to ``q(z|x)``: embeddings, a GRU over the positions up to the end token (its state
    is held through the padding), and a dense layer from the last state to the Gaussian's mean and log-scale.

    Args:
      vocab_size: ``V``, the data's tokens.
      latent_dim: ``D``.
      embed: embedding size; hidden: the GRU's state size.
    """

    def __init__(self, vocab_size: int, latent_dim: int, *, embed: int = 64, hidden: int = 256,
                 rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab_size, embed, rngs=rngs)
        self.cell = nnx.GRUCell(embed, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, 2 * latent_dim, rngs=rngs)
        self.hidden = hidden

    def __call__(self, x: Array) -> DiagonalGaussian:
        tokens, batch_shape = _flat_tokens(x)
        emb = _embed(self.embed, tokens).swapaxes(0, 1)  # [L, N, E]
        keep = (tokens != PAD).T[..., None]  # [L, N, 1]

        def step(h, inputs):
            e, k = inputs
            new, _ = self.cell(h, e)
            return jnp.where(k, new, h), None

        h, _ = jax.lax.scan(step, jnp.zeros((tokens.shape[0], self.hidden), emb.dtype), (emb, keep))
        return DiagonalGaussian.from_raw(self.head(h).reshape(*batch_shape, -1))


def word_dropout_inputs(prev: Array, rate: float, key: Array, unk: int) -> Array:
    """``prev [N, L]`` (the decoder's inputs, start token first) with each token after the first replaced by
    ``unk`` with probability ``rate``, independently (Bowman et al. 2016)."""
    drop = jax.random.bernoulli(key, rate, prev.shape).at[:, 0].set(False)
    return jnp.where(drop, unk, prev)


class GRUDecoder(nnx.Module):
    """``z [..., D]`` and the tokens ``x [..., L]`` (teacher forcing) to logits ``[..., L, V]``.

    Args:
      latent_dim: ``D``.
      length: ``L``, positions of a sequence (sampling draws this many).
      vocab_size: ``V``; the decoder embeds ``V + 2`` tokens (its start and unknown tokens are ``V`` and
        ``V + 1``).
      embed, hidden: embedding and GRU state sizes.
      word_dropout: the share of input tokens replaced by the unknown token in training (0: off).
      deterministic: ``True`` turns word dropout off (evaluation mode); ``Module.eval()``/``train()`` and
        ``nnx.view`` set it.
    """

    def __init__(self, latent_dim: int, length: int, vocab_size: int, *, embed: int = 64, hidden: int = 256,
                 word_dropout: float = 0.0, deterministic: bool = False, rngs: nnx.Rngs):
        if not 0.0 <= word_dropout < 1.0:
            raise ConfigError(f"word_dropout is the share of input tokens replaced in training, in [0, 1); got "
                              f"{word_dropout}.")
        self.length, self.vocab_size, self.word_dropout = length, vocab_size, float(word_dropout)
        self.deterministic = deterministic
        self.start, self.unknown = vocab_size, vocab_size + 1
        self.embed = nnx.Embed(vocab_size + 2, embed, rngs=rngs)
        self.init = nnx.Linear(latent_dim, hidden, rngs=rngs)
        self.cell = nnx.GRUCell(embed + latent_dim, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, vocab_size, rngs=rngs)

    def set_view(self, deterministic: bool | None = None):
        """For ``nnx.view(model, deterministic=...)`` (as ``nnx.Dropout``)."""
        if deterministic is not None:
            self.deterministic = deterministic

    def inputs(self, tokens: Array, key: Array | None = None) -> Array:
        """What step ``t`` reads, ``[N, L]``: the start token, then ``tokens[:, :-1]``; in training mode (not
        ``deterministic``) with ``key`` and ``word_dropout > 0``, after word dropout."""
        prev = jnp.concatenate([jnp.full_like(tokens[:, :1], self.start), tokens[:, :-1]], axis=1)
        if key is not None and self.word_dropout > 0.0 and not self.deterministic:
            prev = word_dropout_inputs(prev, self.word_dropout, key, self.unknown)
        return prev

    def step(self, h: Array, token: Array, z: Array) -> tuple[Array, Array]:
        """One step: state ``h [N, H]``, input token ``[N]``, ``z [N, D]`` -> ``(new state, logits [N, V])``."""
        h, _ = self.cell(h, jnp.concatenate([_embed(self.embed, token), z], axis=-1))
        return h, self.head(h)

    def initial_state(self, z: Array) -> Array:
        return jnp.tanh(self.init(z))

    def __call__(self, z: Array, x: Array, key: Array | None = None) -> Array:
        batch_shape = z.shape[:-1]
        x = jnp.broadcast_to(x, (*batch_shape, x.shape[-1]))
        tokens, _ = _flat_tokens(x)
        zf = z.reshape(-1, z.shape[-1])
        prev = self.inputs(tokens, key).T  # [L, N]

        def body(h, token):
            h, logits = self.step(h, token, zf)
            return h, logits

        _, logits = jax.lax.scan(body, self.initial_state(zf), prev)
        return logits.swapaxes(0, 1).reshape(*batch_shape, tokens.shape[1], self.vocab_size)

    def sample(self, z: Array, key: Array, likelihood: Any, *, greedy: bool = False) -> tuple[Array, Array]:
        """Ancestral (or, ``greedy``, most-likely-token) decoding: tokens ``[..., L]`` (padding after the end
        token; token ``t`` drawn with ``fold_in(key, t)``) and the logits along them ``[..., L, V]``."""
        batch_shape = z.shape[:-1]
        zf = z.reshape(-1, z.shape[-1])
        n = zf.shape[0]

        def body(carry, t):
            h, prev, done = carry
            h, logits = self.step(h, prev, zf)
            tok = (likelihood.mean(logits) if greedy
                   else likelihood.sample(jax.random.fold_in(key, t), logits)).astype(jnp.int32)
            tok = jnp.where(done, PAD, tok)
            return (h, tok, done | (tok == EOS)), (tok, logits)

        carry = (self.initial_state(zf), jnp.full((n,), self.start, jnp.int32), jnp.zeros((n,), bool))
        _, (tokens, logits) = jax.lax.scan(body, carry, jnp.arange(self.length))
        return (tokens.T.reshape(*batch_shape, self.length).astype(zf.dtype),
                logits.swapaxes(0, 1).reshape(*batch_shape, self.length, self.vocab_size))


class RecurrentVAE(AutoregressiveVAE):
    """A single-group VAE over token sequences with a :class:`GRUEncoder` and a :class:`GRUDecoder` (see the
    module docstring). Priors, flows of the posterior's base, IWAE and every objective are :class:`VAE`'s."""

    @classmethod
    def gru(cls, length: int, latent_dim: int, likelihood: Any, *, embed: int = 64, hidden: int = 256,
            encoder_hidden: int = 0, word_dropout: float = 0.0, prior: priors_lib.Prior | None = None,
            rngs: nnx.Rngs) -> RecurrentVAE:
        """Encoder and decoder for sequences of ``length`` tokens of the likelihood's vocabulary
        (``likelihood.num_classes``); ``encoder_hidden`` 0 is ``hidden``."""
        vocab = getattr(likelihood, "num_classes", None)
        if vocab is None:
            raise ConfigError(f"The recurrent decoder models token ids with model.likelihood=categorical; got "
                              f"{type(likelihood).__name__}.")
        encoder = GRUEncoder(vocab, latent_dim, embed=embed, hidden=encoder_hidden or hidden, rngs=rngs)
        decoder = GRUDecoder(latent_dim, length, vocab, embed=embed, hidden=hidden, word_dropout=word_dropout,
                             rngs=rngs)
        return cls(encoder, decoder, likelihood, prior or priors_lib.StandardNormal(latent_dim), (length,))

    def decoder_outputs(self, z: Array, x: Array, key: Array | None = None) -> Array:
        return self.decoder(z, x, key)  # teacher forcing (word dropout with a key, in training mode)

    def decode_mean(self, z: Mapping[str, Array] | Array, key: Array | None) -> Array:
        """Greedy decoding of ``z``: token ids ``[..., L]`` (``key`` is unused: greedy decoding draws nothing)."""
        del key
        tokens, _ = self.decoder.sample(_single_group(z, self.group), jax.random.key(0), self.likelihood,
                                        greedy=True)
        return tokens

    def sample_tokens(self, z: Mapping[str, Array] | Array, key: Array) -> Array:
        """Ancestral samples ``x ~ p(x|z)``, token ids ``[..., L]``."""
        return self.decoder.sample(_single_group(z, self.group), key, self.likelihood)[0]
