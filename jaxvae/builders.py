"""jaxvae 0.1's factory module, kept for one release as a face over where its pieces live now.

The registries (names and traits of every component) are :mod:`jaxvae.catalog`; the factories are
:mod:`jaxvae.models.factory` (likelihoods, priors, networks, the model builder), :mod:`jaxvae.objectives.factory`
(objectives, KL-weight schedules, controllers), :mod:`jaxvae.training.optimizers` and
:func:`jaxvae.training.program.build_program`. Nothing in jaxvae imports this module.
"""

from __future__ import annotations

from jaxvae.catalog import (  # noqa: F401
    BETA_SCHEDULES,
    CONTROLLERS,
    INFERENCE,
    LIKELIHOODS,
    LR_SCHEDULES,
    NETWORKS,
    OBJECTIVES,
    OPTIMIZERS,
    PRIORS,
    REGISTRIES,
    SWEEPABLE_COMMON,
    Registry,
    Spec,
    sweepable_keys,
)
from jaxvae.models.factory import (  # noqa: F401
    ModelBuilder,
    build_likelihood,
    build_model,
    build_training_model,
    builder_reference,
    m2_alpha,
    model_builder,
    reference_is_importable,
    resolve_builder,
)
from jaxvae.objectives.factory import (  # noqa: F401
    ObjectiveContext,
    ObjectiveParts,
    beta_schedule,
    build_controller,
    build_objective,
)
from jaxvae.objectives.losses import Objective  # noqa: F401
from jaxvae.training.optimizers import build_optimizer, learning_rate_schedule, skip_threshold  # noqa: F401
from jaxvae.training.program import ProgramBuilder, build_program  # noqa: F401
