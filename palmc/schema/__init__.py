"""Experiment files: the pydantic schema, YAML loading with line-accurate errors, and import of reference
parameter files."""

from palmc.schema.experiment import (
    ACTIVATIONS,
    DEFAULT_VARIABLES,
    FW_BW_ONLY_VARIABLES,
    PAL_ONLY_VARIABLES,
    RECORDABLE_VARIABLES,
    Experiment,
    ModelEntry,
    ModelOverrides,
    ResolvedModel,
)
from palmc.schema.legacy import convert_legacy, read_legacy_params
from palmc.schema.loading import (
    ExperimentError,
    Problem,
    dump_experiment,
    load_experiment,
    parse_experiment,
    validate_experiment,
)

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_VARIABLES",
    "FW_BW_ONLY_VARIABLES",
    "PAL_ONLY_VARIABLES",
    "RECORDABLE_VARIABLES",
    "Experiment",
    "ExperimentError",
    "ModelEntry",
    "ModelOverrides",
    "Problem",
    "ResolvedModel",
    "convert_legacy",
    "dump_experiment",
    "load_experiment",
    "parse_experiment",
    "read_legacy_params",
    "validate_experiment",
]
