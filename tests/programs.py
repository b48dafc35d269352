"""Models and training programs for the tests of :mod:`jaxvae.training` (importable as ``tests.programs``, so
that a run records ``train.program=tests.programs:adversarial`` and resumes from it):

* ``adversarial``: a small adversarial autoencoder (Makhzani et al. 2015) with two players: the autoencoder
  (reconstruction plus ``beta`` times the non-saturating generator loss of the critic) and a critic on z that
  tells prior samples from posterior samples, trained every other step with its own Adam;
* ``batchnorm_vae``: a VAE whose encoder normalizes its hidden layer with ``nnx.BatchNorm``, whose running
  statistics are non-gradient state updated by the forward pass.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import jaxvae as jv
from jaxvae.models.nets import MLPDecoder
from jaxvae.objectives import Objective, ObjectiveOutput
from jaxvae.training import Player, Program, Schedule

HIDDEN = 32


class Critic(nnx.Module):
    """z [..., D] -> a logit [...]: positive for "drawn from the prior"."""

    def __init__(self, latent_dim: int, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(latent_dim, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, 1, rngs=rngs)

    def __call__(self, z):
        return self.out(nnx.relu(self.hidden(z)))[..., 0]


class AdversarialAE(jv.Model):
    """An MLP VAE (encoder, decoder, standard normal prior) with a critic on its latents; the critic takes no
    part in the model's own forward pass."""

    def __init__(self, event_shape, latent_dim, likelihood, rngs):
        self.vae = jv.VAE.mlp(event_shape, latent_dim, likelihood, hidden=(HIDDEN,), rngs=rngs)
        self.critic = Critic(latent_dim, rngs)
        self.likelihood, self.event_shape = likelihood, tuple(event_shape)

    def forward(self, x, key, num_samples=1):
        return self.vae.forward(x, key, num_samples)

    def prior_sample(self, key, n):
        return self.vae.prior_sample(key, n)

    def decode(self, z):
        return self.vae.decode(z)


def adversarial_ae(event_shape, latent_dim, likelihood, rngs):
    return AdversarialAE(event_shape, latent_dim, likelihood, rngs)


def _stateless(hyper, loss) -> Objective:
    return Objective(init=lambda params: {}, hyper=hyper, loss=loss, update=lambda state, out, step, h: state)


CRITIC_SCHEDULE = Schedule(every=2, phase=1)


def adversarial(cfg, model, objective, optimizer) -> Program:
    """The two players of the adversarial autoencoder (``objective.beta`` weighs the adversarial term)."""
    del objective
    model = model.training()

    def autoencoder_loss(variables, state, x, key, step, hyper):
        fwd = model.forward(variables, x, key)
        recon = -jnp.mean(fwd.log_px_z, axis=0)  # [B]
        kl_per_dim = fwd.kl_per_dim()  # [B, D], reported only: the critic replaces the KL
        kl = jnp.sum(kl_per_dim, axis=-1)
        fooled = jax.nn.softplus(-model.merge(variables).critic(fwd.z["z"][0]))  # -log D(z), [B]
        loss = jnp.mean(recon) + hyper["beta"] * jnp.mean(fooled)
        return loss, ObjectiveOutput(-(recon + kl), recon, kl, kl_per_dim, {"adversarial": jnp.mean(fooled)},
                                     fwd.state)

    def critic_loss(variables, state, x, key, step, hyper):
        k_q, k_p = jax.random.split(key)
        z_q = model.forward(variables, x, k_q).z["z"][0]  # [B, D]
        z_p = jax.random.normal(k_p, z_q.shape)
        critic = model.merge(variables).critic
        real, fake = critic(z_p), critic(z_q)
        loss = jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
        accuracy = 0.5 * (jnp.mean(real > 0) + jnp.mean(fake < 0))
        return loss, ObjectiveOutput(None, None, None, None, {"accuracy": accuracy})

    beta = cfg.objective.beta
    return Program((
        Player("autoencoder", _stateless(lambda step: {"beta": jnp.asarray(beta, jnp.float32)}, autoencoder_loss),
               optimizer, params=lambda path: path[0] != "critic"),
        Player("critic", _stateless(lambda step: {}, critic_loss), optax.adam(1e-3), params=("critic",),
               schedule=CRITIC_SCHEDULE),
    ))


def autoencoder_only(cfg, model, objective, optimizer) -> Program:
    """The first player of :func:`adversarial` alone (its critic never trained)."""
    return Program(adversarial(cfg, model, objective, optimizer).players[:1])


class BatchNormEncoder(nnx.Module):
    """x [B, *E] -> Linear -> BatchNorm -> ReLU -> q(z|x)."""

    def __init__(self, event_shape, latent_dim, rngs):
        self.event_shape = tuple(event_shape)
        self.hidden = nnx.Linear(math.prod(event_shape), HIDDEN, rngs=rngs)
        self.norm = nnx.BatchNorm(HIDDEN, momentum=0.9, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, 2 * latent_dim, rngs=rngs)

    def __call__(self, x):
        h = self.hidden(x.reshape(x.shape[0], -1))
        return jv.DiagonalGaussian.from_raw(self.out(nnx.relu(self.norm(h))))


def batchnorm_vae(event_shape, latent_dim, likelihood, rngs):
    decoder = MLPDecoder(latent_dim, event_shape, (HIDDEN,), num_outputs=likelihood.num_outputs,
                         num_global_outputs=likelihood.num_global_outputs, rngs=rngs)
    return jv.VAE(BatchNormEncoder(event_shape, latent_dim, rngs), decoder, likelihood,
                  jv.models.priors.StandardNormal(latent_dim), event_shape)
