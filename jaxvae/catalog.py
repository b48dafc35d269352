"""The component catalog: every registered component's name and traits, declared once, without JAX.

A :class:`Registry` is the single list of choices of one config key (``objective.name``, ``model.prior``, ...).
The built-in components are declared here, with the traits the rest of jaxvae needs to know before building
anything (an objective a KL controller may drive, one that needs a factorized prior, the settings a sweep may
vary); their factories are attached where they are defined (``@REGISTRY.implement(name)`` in
:mod:`jaxvae.models.factory`, :mod:`jaxvae.objectives.factory`, :mod:`jaxvae.training.optimizers`), and a
registry imports its factories' module the first time a factory is asked for. So
``jaxvae config show`` and every validation read the same declarations as the factories, with no copied list and
without importing JAX.

A user's component is declared and implemented in one step, ``@REGISTRY.register(name, **traits)``; the config
then accepts its name.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from jaxvae.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Spec(Generic[T]):
    """One component: its factory (``None`` until the factories' module is imported) and its traits."""

    build: T | None = None
    doc: str = ""
    controllable: bool = False  # objectives: a KL controller may set their beta
    needs_factorized_prior: bool = False  # objectives: need a KL per latent dimension
    factorized: bool = False  # priors: a product over dimensions (a KL per dimension exists)
    sweepable: tuple[str, ...] = ()  # objectives: their settings that only change traced weights (see sweep)
    # objectives: re-score one latent group (no hierarchies; jaxvae.objectives.estimators)
    single_group: bool = False


class Registry(Generic[T]):
    """The components of one kind, by name: the single list of choices of the config key ``key``.

    ``REGISTRY[name]`` is the factory; ``REGISTRY.spec(name)`` its :class:`Spec`; iterating gives the names in
    declaration order. ``declare`` lists a built-in, ``implement`` attaches its factory, ``register`` does both
    (a user's component).
    """

    def __init__(self, key: str, factories: str):
        self.key, self.factories = key, factories  # factories: the module that implements the built-ins
        self._specs: dict[str, Spec[T]] = {}

    def declare(self, name: str, **traits: Any) -> None:
        """Lists a built-in component and its traits (no factory yet)."""
        if name in self._specs:
            raise ValueError(f"{self.key}: {name!r} is declared twice.")
        self._specs[name] = Spec(**traits)

    def implement(self, name: str) -> Callable[[T], T]:
        """Decorator attaching the factory of the declared component ``name``."""
        def attach(build: T) -> T:
            if name not in self._specs:
                raise ValueError(f"{self.key}: {name!r} is not declared in jaxvae.catalog; declare it there (its "
                                 "traits are read without JAX) or use register() for a component of your own.")
            self._specs[name] = dataclasses.replace(self._specs[name], build=build,
                                                    doc=self._specs[name].doc or inspect.getdoc(build) or "")
            return build

        return attach

    def register(self, name: str, **traits: Any) -> Callable[[T], T]:
        """Decorator declaring and implementing a component (a user's): ``@OBJECTIVES.register("mine")``."""
        def add(build: T) -> T:
            self._specs[name] = Spec(build, doc=inspect.getdoc(build) or "", **traits)
            return build

        return add

    def spec(self, name: str) -> Spec[T]:
        if name not in self._specs:
            close = difflib.get_close_matches(name, list(self._specs), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{self.key}={name!r} is not valid.{hint} Choose one of: {', '.join(self._specs)}.")
        return self._specs[name]

    def __getitem__(self, name: str) -> T:
        spec = self.spec(name)
        if spec.build is None:
            importlib.import_module(self.factories)  # attaches the built-in factories
            spec = self.spec(name)
        if spec.build is None:
            raise RuntimeError(f"{self.key}={name!r} is declared but {self.factories} implements no factory for "
                               "it.")
        return spec.build

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


_M, _O, _T = "jaxvae.models.factory", "jaxvae.objectives.factory", "jaxvae.training.optimizers"


def _declare(registry: Registry, *names: str, **traits: Any) -> Registry:
    for name in names:
        registry.declare(name, **traits)
    return registry


# ------------------------------------------------------------------------------------------------- model
LIKELIHOODS: Registry = _declare(Registry("model.likelihood", _M), "bernoulli", "continuous_bernoulli", "gaussian",
                                 "laplace", "categorical256", "categorical", "discretized_logistic_mixture")
PRIORS: Registry = _declare(Registry("model.prior", _M), "standard_normal", "learned_gaussian", factorized=True)
_declare(PRIORS, "mixture", "vamp")
NETWORKS: Registry = _declare(Registry("model.network", _M), "mlp", "conv", "hierarchical")
INFERENCE: Registry = _declare(Registry("model.inference", _M), "bottom_up", "ladder", "top_down")

# --------------------------------------------------------------------------------------------- optimizer
LR_SCHEDULES: Registry = _declare(Registry("optimizer.schedule", _T), "constant", "cosine", "warmup_cosine",
                                  "iwae", "multistep")
OPTIMIZERS: Registry = _declare(Registry("optimizer.name", _T), "adam", "adamax", "adamw")

# --------------------------------------------------------------------------------------------- objective
BETA_SCHEDULES: Registry = _declare(Registry("objective.beta_schedule", _O), "constant", "cyclical", "linear",
                                    "sigmoid", "cosine")
CONTROLLERS: Registry = _declare(Registry("objective.controller", _O), "none", "geco", "pi")
OBJECTIVES: Registry = Registry("objective.name", _O)
OBJECTIVES.declare("elbo", controllable=True)
OBJECTIVES.declare("iwae")
OBJECTIVES.declare("free_bits", controllable=True, needs_factorized_prior=True, sweepable=("free_bits.nats",))
OBJECTIVES.declare("capacity", sweepable=("capacity.nats", "capacity.steps", "capacity.gamma"))
OBJECTIVES.declare("beta_tcvae", needs_factorized_prior=True, sweepable=("beta_tcvae.alpha", "beta_tcvae.gamma"))
OBJECTIVES.declare("info_vae", sweepable=("info_vae.alpha", "info_vae.mmd_weight"))
OBJECTIVES.declare("miwae")
OBJECTIVES.declare("ciwae", sweepable=("ciwae.beta",))
OBJECTIVES.declare("piwae", single_group=True)
OBJECTIVES.declare("iwae_dreg", single_group=True)
OBJECTIVES.declare("elbo_stl", controllable=True, single_group=True)

REGISTRIES = (LIKELIHOODS, PRIORS, NETWORKS, INFERENCE, LR_SCHEDULES, OPTIMIZERS, BETA_SCHEDULES, CONTROLLERS,
              OBJECTIVES)


@dataclasses.dataclass(frozen=True)
class Components:
    """What validation needs to know about the components: their names per config key (in declaration order)
    and which of them have the traits that restrict combinations."""

    names: dict[str, tuple[str, ...]]
    controllable: tuple[str, ...]  # objectives whose beta a KL controller may set
    single_group: tuple[str, ...]  # objectives that re-score one latent group (no hierarchies)
    needs_factorized_prior: tuple[str, ...]  # objectives that need a KL per latent dimension
    factorized_priors: tuple[str, ...]  # priors that are a product over dimensions


def components() -> Components:
    """The catalog as it stands (the built-ins and every component registered so far)."""
    def having(registry: Registry, trait: str) -> tuple[str, ...]:
        return tuple(n for n in registry if getattr(registry.spec(n), trait))

    return Components(
        names={r.key: tuple(r) for r in REGISTRIES},
        controllable=having(OBJECTIVES, "controllable"),
        single_group=having(OBJECTIVES, "single_group"),
        needs_factorized_prior=having(OBJECTIVES, "needs_factorized_prior"),
        factorized_priors=having(PRIORS, "factorized"))


# The KL-weight settings every objective shares, which only change its traced weights.
SWEEPABLE_COMMON = ("objective.beta", "objective.beta_start", "objective.beta_schedule", "objective.warmup_steps",
                    "objective.num_cycles", "objective.cycle_ratio")


def sweepable_keys() -> tuple[str, ...]:
    """Every key that may vary within one sweep: the shared KL-weight settings, every objective's ``sweepable``
    settings, and ``train.seed``."""
    own = [f"objective.{k}" for name in OBJECTIVES for k in OBJECTIVES.spec(name).sweepable]
    return (*SWEEPABLE_COMMON, *own, "train.seed")
