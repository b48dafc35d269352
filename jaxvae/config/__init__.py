"""Configuration: the schema (frozen dataclasses), named presets, dotted overrides, validation, files and
the description of every key; JAX-free (``jaxvae config show`` and ``--help`` start without JAX).

A config is a tree of frozen dataclasses. Presets are named configs; overrides are ``"section.key=value"``
strings (the CLI's ``--set``), parsed by the field's declared type. Everything is validated in one place with
messages that say what is wrong and how to fix it, and the resolved config round-trips through JSON
(``config.json`` in every run directory).

Example::

    cfg = jv.config.get_preset("mnist")
    cfg = jv.config.apply_overrides(cfg, ["model.latent_dim=16", "train.steps=2000"])
"""

from __future__ import annotations

from typing import Any

from jaxvae import catalog
from jaxvae.catalog import Components
from jaxvae.config.describe import (
    KeyDescription,
    describe_keys,
)
from jaxvae.config.files import (
    REPORTING_ONLY,
    diff,
    from_dict,
    from_file,
    from_saved,
    read_file,
    to_dict,
    to_json,
)
from jaxvae.config.overrides import (
    apply_overrides,
)
from jaxvae.config.presets import (
    PRESETS,
    get_preset,
)
from jaxvae.config.schema import (
    LEGACY_KEYS,
    TRACKER_NAMES,
    AggressiveConfig,
    BetaTCVAEConfig,
    CapacityConfig,
    CIWAEConfig,
    Config,
    DataConfig,
    EarlyStoppingConfig,
    EvalConfig,
    FreeBitsConfig,
    GecoConfig,
    InfoVAEConfig,
    MeshConfig,
    ModelConfig,
    MonitorConfig,
    ObjectiveConfig,
    OptimizerConfig,
    OuterSamplesConfig,
    PIConfig,
    PixelCNNConfig,
    PlateauConfig,
    RNNConfig,
    SpectralRegConfig,
    TrackConfig,
    TrainConfig,
    all_keys,
    canonical_key,
    closest_hint,
    data_seed,
    field_types,
    get_value,
    is_builder_reference,
    is_section,
    latent_size,
    type_name,
)
from jaxvae.config.validation import (
    registered_components,
    topdown_groups,
    validate,
)
from jaxvae.errors import ConfigError

__all__ = [
    "LEGACY_KEYS",
    "PRESETS",
    "REPORTING_ONLY",
    "TRACKER_NAMES",
    "AggressiveConfig",
    "BetaTCVAEConfig",
    "CIWAEConfig",
    "CapacityConfig",
    "Components",
    "Config",
    "ConfigError",
    "DataConfig",
    "EarlyStoppingConfig",
    "EvalConfig",
    "FreeBitsConfig",
    "GecoConfig",
    "InfoVAEConfig",
    "KeyDescription",
    "MeshConfig",
    "ModelConfig",
    "MonitorConfig",
    "ObjectiveConfig",
    "OptimizerConfig",
    "OuterSamplesConfig",
    "PIConfig",
    "PixelCNNConfig",
    "PlateauConfig",
    "RNNConfig",
    "SpectralRegConfig",
    "TrackConfig",
    "TrainConfig",
    "all_keys",
    "apply_overrides",
    "canonical_key",
    "closest_hint",
    "data_seed",
    "describe_keys",
    "diff",
    "field_types",
    "from_dict",
    "from_file",
    "from_saved",
    "get_preset",
    "get_value",
    "is_builder_reference",
    "is_section",
    "latent_size",
    "read_file",
    "registered_components",
    "to_dict",
    "to_json",
    "topdown_groups",
    "type_name",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name == "BUILTIN_COMPONENTS":  # jaxvae 0.1's JAX-free copy of the registries, now the catalog itself
        return catalog.components()
    raise AttributeError(f"module 'jaxvae.config' has no attribute {name!r}")
