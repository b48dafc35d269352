"""Named presets: a config each, from the digits quick start to the reproductions of published models."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxvae.config.schema import Config, closest_hint
from jaxvae.errors import ConfigError


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



def get_preset(name: str = "digits") -> Config:
    """The named preset (see :data:`PRESETS` or ``jaxvae presets``)."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}.{closest_hint(name, PRESETS)} "
                          f"Available presets: {', '.join(PRESETS)} (list them with `jaxvae presets`).")
    return PRESETS[name][1]
