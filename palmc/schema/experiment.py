"""The experiment schema: pydantic models that define what an experiment file may contain.

These models are the single source of truth for experiment files: YAML files are validated against them, the JSON
Schema in ``schemas/experiment.schema.json`` is generated from them, and each model entry of an experiment resolves
to one engine-level :class:`palmc.engine.params.ModelParams`.

Conventions: times are in ms, conductances in 1/ms. A network ``[n0, n1, ..., nL]`` has ``L`` weight layers
(``L`` pyramidal populations, network layers 1..L) and ``L-1`` hidden layers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Iterator, Literal, Optional, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationError,
    WrapValidator,
    PrivateAttr,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from palmc.engine.datasets import (
    DatasetError,
    LabelledData,
    check_arrays,
    read_arrays,
    target_voltages,
    yinyang_data,
)
from palmc.engine.params import (
    Activation,
    DecayedRate,
    ModelKind,
    ModelParams,
    NoiseMode,
    NoiseType,
    Protocol,
    TargetMap,
    Task,
)
from palmc.engine.variables import FW_BW_ONLY, PAL_ONLY, RECORDABLE
from palmc.schema.sweep import Sweep, apply_values, get_path, label as variant_label, structural_problems
from palmc.schema.yaml_dialect import dump_yaml

# --------------------------------------------------------------------------------------------------------------
# vocabularies
# --------------------------------------------------------------------------------------------------------------

RecordVariable = Literal[RECORDABLE]  # type: ignore[valid-type]
"""Names of the variables a run can record (declared in palmc.engine.variables, the dataset contract's names)."""

RECORDABLE_VARIABLES: tuple[str, ...] = get_args(RecordVariable)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
TASKS: tuple[str, ...] = get_args(Task)
NOISE_MODES: tuple[str, ...] = get_args(NoiseMode)
NOISE_TYPES: tuple[str, ...] = get_args(NoiseType)

FW_BW_ONLY_VARIABLES: tuple[str, ...] = FW_BW_ONLY
"""Variables that only exist when the output layer has targets (tasks ``fw_bw`` and ``supervised``)."""
PAL_ONLY_VARIABLES: tuple[str, ...] = PAL_ONLY
"""Variables that only PAL models have (recorded as NaN for BP and FA)."""

DEFAULT_VARIABLES: dict[str, tuple[str, ...]] = {
    "bw_only": ("WPP", "BPP", "vbas"),
    "fw_bw": ("WPP", "BPP", "vbas", "MSE", "error", "target"),
    "supervised": ("WPP", "BPP", "MSE"),
}
"""Variables recorded when ``recording.variables`` is omitted, per task."""

OVERRIDABLE_SECTIONS: tuple[str, ...] = ("network", "dynamics", "plasticity", "noise", "filters", "init")
"""Sections a model entry may override."""

STEP_TOLERANCE = 1e-9
"""Relative tolerance when checking that a duration is a whole number of time steps."""

Location = tuple[str | int, ...]
"""A key path from the experiment's root, e.g. ``("models", 1, "overrides", "noise", "scale")``."""

MAX_SEED = 2**32
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"


def format_layers(layers: list[int] | tuple[int, ...]) -> str:
    """Layer widths as written in messages, e.g. ``[5,20,10,20,5]``."""
    return "[" + ",".join(str(width) for width in layers) + "]"


def whole_steps(duration: float, dt: float) -> int | None:
    """``duration / dt`` as an int if it is whole (relative tolerance 1e-9), else None."""
    ratio = duration / dt
    steps = round(ratio)
    if abs(ratio - steps) <= STEP_TOLERANCE * max(1.0, abs(ratio)):
        return int(steps)
    return None


# --------------------------------------------------------------------------------------------------------------
# error messages
# --------------------------------------------------------------------------------------------------------------


def show_value(value: Any) -> str:
    """A short, YAML-like rendering of a value found in the input."""
    if isinstance(value, str):
        shown = repr(value)
    else:
        try:
            shown = json.dumps(value)
        except (TypeError, ValueError):
            shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _unwrap_model(annotation: Any) -> Any:
    """The first pydantic model class inside an annotation (through Optional, list, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _unwrap_model(argument)
        if found is not None:
            return found
    return None


def _model_at(location: Location) -> type[BaseModel] | None:
    """The schema model that validates the mapping at ``location`` (None if it is not a model)."""
    model: type[BaseModel] | None = Experiment
    for part in location:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
    return model


_TYPE_NAMES = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a text string", "list_type": "a list",
    "tuple_type": "a list", "dict_type": "a mapping", "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields", "none_required": "null",
    "finite_number": "a finite number",
}
_BOUND_NAMES = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
                "less_than_equal": ("le", "<=")}


def describe_error(error: dict[str, Any], location: Location) -> str:
    """An 'expected ..., got ...' message for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    found = show_value(error.get("input"))
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        parent = _model_at(location[:-1])
        allowed = ", ".join(parent.model_fields) if parent is not None else "see the schema"
        return f"unknown field {location[-1]!r}; expected one of: {allowed}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}, got {found}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, got {found}"
    if kind in _BOUND_NAMES:
        key, symbol = _BOUND_NAMES[kind]
        return f"expected a value {symbol} {ctx.get(key)}, got {found}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} entries, got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} entries, got {ctx.get('actual_length')}"
    if kind == "string_pattern_mismatch":
        return ("expected a name of letters, digits, '_', '.', '+' and '-' that starts with a letter or digit, "
                f"got {found}")
    return f"{error['msg']}, got {found}"


# --------------------------------------------------------------------------------------------------------------
# reusable field types (validators live in the annotations so that the override models inherit them)
# --------------------------------------------------------------------------------------------------------------


def _check_at_least_three_layers(layers: list[int]) -> list[int]:
    if len(layers) < 3:
        raise ValueError(
            f"expected at least 3 layers (input, one or more hidden, output), got {len(layers)}: "
            f"{format_layers(layers)}"
        )
    return layers


def _check_range(bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    if low > high:
        raise ValueError(f"expected [low, high] with low <= high, got [{low}, {high}]")
    return bounds


def _validate_activation(value: Any, handler: Any) -> Any:
    """Validate an activation spec with one clear message instead of one per union member."""
    allowed = ", ".join(repr(name) for name in ACTIVATIONS)
    if isinstance(value, str):
        if value not in ACTIVATIONS:
            raise ValueError(f"expected one of {allowed}, got {value!r}")
    elif isinstance(value, (list, tuple)):
        for index, entry in enumerate(value):
            if entry not in ACTIVATIONS:
                raise ValueError(f"entry {index}: expected one of {allowed}, got {entry!r}")
    else:
        raise ValueError(f"expected an activation name ({allowed}) or a list of names, got {value!r}")
    return handler(value)


def _refuse_unimplemented_noise_mode(value: Any) -> Any:
    if value == "uP_adaptive":
        raise ValueError(
            "noise mode 'uP_adaptive' is not supported: the reference never implemented it (its branch in the "
            "noise generator is commented out, so it would inject no defined noise); use one of "
            + ", ".join(repr(mode) for mode in NOISE_MODES)
        )
    return value


def _check_unique(values: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    repeated_values: set[Any] = set()
    for value in values:  # linear: a list of 100,000 seeds is checked in milliseconds
        (repeated_values if value in seen else seen).add(value)
    repeated = sorted(str(value) for value in repeated_values)
    if repeated:
        raise ValueError(f"expected unique values, got repeated {', '.join(repeated)}")
    return values


# strict: YAML's true/false are not widths (pydantic would read them as 1 and 0)
LayerWidths = Annotated[list[Annotated[int, Field(ge=1, strict=True)]], AfterValidator(_check_at_least_three_layers)]
ActivationSpec = Annotated[Activation | list[Activation], WrapValidator(_validate_activation)]
Range = Annotated[tuple[float, float], AfterValidator(_check_range)]
NoiseModeName = Annotated[NoiseMode, BeforeValidator(_refuse_unimplemented_noise_mode)]
PerLayerValues = list[float]
Seed = Annotated[int, Field(ge=0, lt=MAX_SEED)]
Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1)]


class Section(BaseModel):
    """Base of every schema model: unknown fields are errors, numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------------------


class Network(Section):
    """Architecture: layer widths and the activation function of the pyramidal (and inter-) neurons."""

    layers: LayerWidths = Field(
        description="Number of neurons per layer from input to output, e.g. [5, 20, 10, 20, 5]: the input layer, one "
        "or more hidden layers, the output layer (at least 3 layers). A network of L+1 layers has L weight layers "
        "and L-1 hidden layers; per-layer lists elsewhere are sized accordingly."
    )
    activation: ActivationSpec = Field(
        "logistic",
        description="Activation function: one name for all pyramidal layers, or a list with one name per pyramidal "
        "layer (len(layers)-1 entries, layers 1..L). Interneurons of layer l use the activation of layer l. "
        "Names: " + ", ".join(ACTIVATIONS) + ".",
    )


class Dynamics(Section):
    """Time grid, conductances and prospectivity of the neuron dynamics. Times in ms, conductances in 1/ms."""

    dt: float = Field(0.01, gt=0, description="Euler integration time step (ms).")
    Tpres: float = Field(
        1.0, gt=0, description="Presentation time of each input pattern (ms); a whole multiple of dt."
    )
    settling_time: float = Field(
        100.0,
        ge=0,
        description="Time before training during which voltages settle with all plasticity off (ms); a whole "
        "multiple of dt. May be longer than one epoch.",
    )
    gl: float = Field(0.03, gt=0, description="Leak conductance (1/ms); > 0 since it appears in divisors.")
    gbas: float = Field(0.1, ge=0, description="Basal dendrite to soma coupling conductance of pyramidal cells (1/ms).")
    gapi: float = Field(0.06, ge=0, description="Apical dendrite to soma coupling conductance of pyramidal cells (1/ms).")
    gden: float = Field(
        0.1,
        gt=0,
        description="Dendrite to soma coupling conductance of interneurons (1/ms); > 0 since the self-predicting "
        "state divides by it.",
    )
    gnI: float = Field(0.06, ge=0, description="Nudging conductance from pyramidal cells onto interneurons (1/ms).")
    gntgt: float = Field(0.06, ge=0, description="Nudging conductance of the target onto the output layer (1/ms).")
    taur: float = Field(
        1.0,
        ge=0,
        description="Prospectivity factor (dimensionless): the lookahead voltage is u_breve = u_old + taur * "
        "tau_eff * (u - u_old) / dt. 1 is the standard prospective voltage, 0 makes it the previous voltage.",
    )


class Plasticity(Section):
    """Learning rates of the four weight types and the PAL regularizer."""

    eta_fw: PerLayerValues = Field(
        description="Learning rate of the forward weights WPP, one per weight layer (len(layers)-1 values, into "
        "layers 1..L). Forward weights learn only in task fw_bw."
    )
    eta_bw: PerLayerValues = Field(
        description="Learning rate of the feedback weights BPP, one per hidden layer (len(layers)-2 values). BP "
        "and FA ignore it (BP's feedback is the transposed forward weights; FA's random feedback never changes): only "
        "PAL learns its feedback."
    )
    eta_IP: PerLayerValues = Field(
        description="Learning rate of the pyramidal-to-interneuron weights WIP, one per hidden layer "
        "(len(layers)-2 values)."
    )
    eta_PI: PerLayerValues = Field(
        description="Learning rate of the interneuron-to-pyramidal weights BPI, one per hidden layer "
        "(len(layers)-2 values)."
    )
    alpha: Optional[PerLayerValues] = Field(
        None,
        description="PAL only: strength of the regularizer of the BPP update, one per hidden layer (len(layers)-2 "
        "values). Required when a PAL model is present; null for experiments without PAL.",
    )
    dWPP_use_activation: bool = Field(
        True,
        description="Whether the forward-weight update compares rates (phi(u) - phi(v_hat), standard) instead of "
        "voltages (u - v_hat).",
    )
    eta_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Learning-rate schedule: after eta_decay_after epochs at the full rates, every further epoch "
        "multiplies the rates named in eta_decay_rates by this factor (epoch e, counted from 0, learns with "
        "eta * eta_decay ** (e - eta_decay_after + 1)), so that online learning settles at the end. 1 = no schedule "
        "(constant rates). The rates change only at epoch starts; settling learns nothing.",
    )
    eta_decay_after: int = Field(
        0, ge=0, description="Number of epochs learned at the full rates before eta_decay starts to act."
    )
    eta_decay_rates: list[DecayedRate] = Field(
        default_factory=lambda: ["eta_fw", "eta_bw", "eta_IP", "eta_PI"],
        min_length=1,
        description="The learning rates eta_decay scales, each named once: any of 'eta_fw', 'eta_bw', 'eta_IP', "
        "'eta_PI' (PAL's regularizer alpha acts through eta_bw). Default: all four.",
    )

    @field_validator("eta_decay_rates")
    @classmethod
    def _each_rate_once(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"expected each rate once, got {', '.join(repeated)} more than once")
        return value


class Noise(Section):
    """PAL only: the noise injected into the apical dendrites of hidden layers. Times in ms."""

    type: NoiseType = Field(
        "OU",
        description="Noise process: 'OU' (Ornstein-Uhlenbeck: low-pass filtered white noise with time constant "
        "tauxi, resampled every dtxi) or 'hold_white_noise' (white noise held constant for dtxi).",
    )
    mode: NoiseModeName = Field(
        "const",
        description="How the noise amplitude is scaled: 'const' (scale only), 'uP' (times |uP|), 'uP_breve' "
        "(times |uP_breve|) or 'vapi' (times |vapi|). 'uP_adaptive' is refused: the reference never implemented it.",
    )
    scale: Optional[PerLayerValues] = Field(
        None,
        description="Noise amplitude, one per hidden layer (len(layers)-2 values). Required when a PAL model is "
        "present; null for experiments without PAL.",
    )
    tauxi: float = Field(0.1, gt=0, description="Time constant of the OU noise (ms).")
    dtxi: float = Field(
        0.01, gt=0, description="Interval between noise samples (ms); a whole multiple of dt (checked for PAL models)."
    )


class Filters(Section):
    """PAL only: filters and regularizer options of PAL's plasticity. BP and FA ignore this section. Times in ms."""

    tauHP: float = Field(0.1, gt=0, description="Time constant of the high-pass filter on pyramidal rates (ms).")
    tauLO: float = Field(100.0, gt=0, description="Time constant of the low-pass filters (ms).")
    pyr_hi_pass: bool = Field(True, description="High-pass filter the pyramidal rates used in the BPP update.")
    dWPP_low_pass: bool = Field(True, description="Low-pass filter the updates of the forward weights WPP.")
    dWPP_r_low_pass: bool = Field(
        False, description="Low-pass filter the presynaptic rates in the WPP update (takes precedence over "
        "dWPP_post_low_pass)."
    )
    dWPP_post_low_pass: bool = Field(
        False,
        description="Low-pass filter the postsynaptic error term of the WPP update. Requires dWPP_use_activation: "
        "true (the voltage-based variant crashes in the reference and has no defined behaviour).",
    )
    inter_low_pass: bool = Field(False, description="Low-pass filter the dendritic input of the interneurons.")
    gate_regularizer: bool = Field(False, description="Apply the BPP regularizer only where rP_breve > 0.")
    varphi_regularizer: bool = Field(
        False, description="Use phi'(u) B phi'(u) (derivatives of the activation) in the regularizer."
    )


class TeacherInit(Section):
    """Weight initialisation of the fw_bw teacher: uniform in [low, high]."""

    WPP_range: Range = Field((-1.0, 1.0), description="[low, high] of the teacher's forward weights WPP.")
    WIP_range: Range = Field((-1.0, 1.0), description="[low, high] of the teacher's weights WIP (overridden by in_SPS).")
    BPP_range: Range = Field((-1.0, 1.0), description="[low, high] of the teacher's feedback weights BPP.")
    BPI_range: Range = Field((-1.0, 1.0), description="[low, high] of the teacher's weights BPI (overridden by in_SPS).")


class Init(Section):
    """Initial weights (uniform in [low, high]) and initial state of students and teacher."""

    WPP_range: Range = Field((-1.0, 1.0), description="[low, high] of the forward pyramidal-to-pyramidal weights WPP.")
    WIP_range: Range = Field(
        (-1.0, 1.0), description="[low, high] of the pyramidal-to-interneuron weights WIP (overridden by in_SPS)."
    )
    BPP_range: Range = Field(
        (-1.0, 1.0), description="[low, high] of the feedback weights BPP (FA and PAL; BP uses the transposed WPP)."
    )
    BPI_range: Range = Field(
        (-1.0, 1.0), description="[low, high] of the interneuron-to-pyramidal weights BPI (overridden by in_SPS)."
    )
    teacher: TeacherInit = Field(
        default_factory=TeacherInit, description="Weight ranges of the teacher network (task fw_bw only)."
    )
    in_SPS: bool = Field(
        True, description="Start in the self-predicting state: WIP and BPI are set from WPP and BPP."
    )
    copy_teacher_weights: bool = Field(False, description="fw_bw: start students with the teacher's weights (testing).")
    copy_teacher_voltages: bool = Field(
        False, description="fw_bw: start students with the teacher's voltages (testing)."
    )


def _dataset_shorthand(value: Any) -> Any:
    """``dataset: yinyang`` = the built-in Yin-Yang splits; ``dataset: <file>`` = that file's default arrays."""
    if isinstance(value, str):
        return {"source": "yinyang"} if value == "yinyang" else {"source": "file", "path": value}
    return value


class Dataset(Section):
    """Task supervised: labelled data, the built-in Yin-Yang dataset or arrays from a file."""

    source: Literal["yinyang", "file"] = Field(
        description="'yinyang': the Yin-Yang dataset (Kriener, Goeltz, Petrovici 2022), generated from train_size/"
        "train_seed and test_size/test_seed; 'file': arrays read from path. The shorthand 'dataset: yinyang' "
        "(or 'dataset: <path>') is accepted."
    )
    train_size: int = Field(5000, ge=1, description="yinyang: training samples (published split: 5000).")
    train_seed: Seed = Field(42, description="yinyang: seed of the training split (published: 42).")
    test_size: int = Field(1000, ge=1, description="yinyang: test samples (published split: 1000).")
    test_seed: Seed = Field(
        40, description="yinyang: seed of the test split (published: 40; the validation split is seed 41)."
    )
    path: Optional[str] = Field(
        None,
        description="file: a .npz file or a NetCDF/Zarr dataset (relative paths are relative to the working "
        "directory palmc runs in). Inputs have shape (samples, input width); labels are class indices (samples,) "
        "in 0..output width-1 or one-hot rows (samples, output width).",
    )
    x_train: str = Field("x_train", description="file: name of the training inputs' array/variable.")
    y_train: str = Field("y_train", description="file: name of the training labels' array/variable.")
    x_test: str = Field("x_test", description="file: name of the test inputs' array/variable.")
    y_test: str = Field("y_test", description="file: name of the test labels' array/variable.")

    @model_validator(mode="after")
    def _path_for_files(self) -> "Dataset":
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs a path (a .npz file or a NetCDF/Zarr dataset)")
        if self.source == "yinyang" and self.path is not None:
            raise ValueError(f"source 'yinyang' is generated, not read: expected no path, got {self.path!r}")
        return self

    def array_names(self) -> dict[str, str]:
        """Role (x_train, y_train, x_test, y_test) -> name of the array in the file."""
        return {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test}


class Target(Section):
    """Task supervised: the output target of a sample, from its label (one-hot: on for its class, off else)."""

    kind: Literal["voltage", "rate"] = Field(
        "voltage",
        description="'voltage': on/off are target voltages u^tgt of the output neurons; 'rate': on/off are target "
        "rates, turned into voltages with the inverse of the output activation (logistic, tanh or linear).",
    )
    on: float = Field(1.0, description="Target of the output neuron of the sample's class.")
    off: float = Field(0.0, description="Target of the other output neurons.")


class Input(Section):
    """The input patterns and how long they are presented."""

    signal: Literal["step"] = Field(
        "step",
        description="Input signal: 'step' = dataset_size random patterns, uniform in [0, 1), each held for Tpres "
        "(task supervised: the dataset's training samples).",
    )
    dataset_size: int = Field(
        100, ge=1, description="Number of input patterns per epoch (task supervised ignores it: the training set "
        "is the epoch)."
    )
    epochs: int = Field(100, ge=1, description="Number of passes over the shuffled patterns after settling.")
    dataset: Annotated[Optional[Dataset], BeforeValidator(_dataset_shorthand)] = Field(
        None, description="Task supervised only (required there): the labelled data, 'yinyang' or a file."
    )
    target: Target = Field(
        default_factory=Target, description="Task supervised: how labels become output targets."
    )


class Evaluation(Section):
    """Task supervised: when the network's accuracy is measured (plasticity, nudging and noise off)."""

    every: int = Field(
        1, ge=1, description="Evaluate after settling, every N epochs and after the last epoch (N >= 1)."
    )
    train_samples: int = Field(
        1000, ge=0, description="The training accuracy is measured on the first this many training samples (all of "
        "them if fewer; 0 = no training accuracy)."
    )


def _and(names: tuple[str, ...]) -> str:
    """``a, b and c``."""
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


class Recording(Section):
    """What is recorded and how often."""

    variables: Optional[Annotated[list[RecordVariable], AfterValidator(_check_unique)]] = Field(
        None,
        description="Variables to record. Omitted or null = the task's default set ("
        + "; ".join(f"{task}: {', '.join(names)}" for task, names in DEFAULT_VARIABLES.items())
        + f"). {_and(FW_BW_ONLY)} exist only where the output has targets (fw_bw and supervised); {_and(PAL_ONLY)} "
        "only in PAL models.",
    )
    every: int = Field(
        1000, ge=1, description="Record every N integration steps (N >= 1; the time between records is N * dt ms)."
    )
    chunk_records: Optional[int] = Field(
        None, ge=1, description="Records per Zarr chunk along time; null = chosen automatically."
    )


class Output(Section):
    """Where results are written."""

    store: Optional[str] = Field(
        None,
        description="Path of the Zarr store to write; null = results/<name>.zarr. Relative paths are relative to "
        "the working directory palmc runs in.",
    )


class Compute(Section):
    """How runs are executed. Does not change results."""

    engine: Literal["numpy", "compiled"] = Field(
        "compiled", description="Integrator: 'numpy' (reference-faithful, slower) or 'compiled' (fast)."
    )
    scheduler: Optional[str] = Field(
        None, description="Dask scheduler address (e.g. tcp://host:8786); null = a local pool on this machine."
    )
    workers: Optional[int] = Field(None, ge=1, description="Number of parallel workers; null = number of CPU cores.")
    connect_timeout: float = Field(
        20.0, gt=0, description="Seconds to wait for the Dask scheduler to answer before giving up."
    )

    @field_validator("scheduler")
    @classmethod
    def _check_scheduler(cls, value: Optional[str]) -> Optional[str]:
        problem = scheduler_address_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


SCHEDULER_ADDRESS = re.compile(
    r"^(?:(?:tcp|tls|ucx|ws|wss)://)?"  # Dask's protocols (none = tcp)
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"  # [IPv6], IPv4 or host name
    r":(?P<port>[0-9]{1,5})$"
)


def scheduler_address_problem(address: str) -> str | None:
    """Why ``address`` is not a Dask scheduler address (``tcp://host:8786``, ``host:8786``), or None."""
    if re.match(r"^inproc://\S+$", address.strip()):  # a scheduler in this process (tests, notebooks)
        return None
    match = SCHEDULER_ADDRESS.match(address.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        return f"expected a Dask scheduler address such as tcp://host:8786, got {address!r}"
    return None


# --------------------------------------------------------------------------------------------------------------
# per-model overrides: partial versions of the overridable sections, generated from them
# --------------------------------------------------------------------------------------------------------------


def _partial_section(section: type[Section]) -> type[Section]:
    """A copy of ``section`` in which every field is optional (default None) and unset fields mean 'inherit'."""
    fields: dict[str, Any] = {}
    for field_name, info in section.model_fields.items():
        annotation: Any = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            annotation = _partial_section(annotation)
        elif info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        fields[field_name] = (Optional[annotation], Field(None, description=info.description))
    name = section.__name__ + "Override"
    doc = f"Partial {section.__name__}: only the fields given replace the experiment's shared values."
    return create_model(name, __base__=Section, __doc__=doc, **fields)


NetworkOverride = _partial_section(Network)
DynamicsOverride = _partial_section(Dynamics)
PlasticityOverride = _partial_section(Plasticity)
NoiseOverride = _partial_section(Noise)
FiltersOverride = _partial_section(Filters)
InitOverride = _partial_section(Init)


class ModelOverrides(Section):
    """Per-model changes, deep-merged over the shared sections (lists are replaced as a whole) and re-validated.

    network.layers, dynamics.dt, dynamics.Tpres and dynamics.settling_time are shared by all runs of an experiment
    and cannot differ between models."""

    network: Optional[NetworkOverride] = Field(None, description="Changes to network (activation only).")  # type: ignore[valid-type]
    dynamics: Optional[DynamicsOverride] = Field(None, description="Changes to dynamics.")  # type: ignore[valid-type]
    plasticity: Optional[PlasticityOverride] = Field(None, description="Changes to plasticity.")  # type: ignore[valid-type]
    noise: Optional[NoiseOverride] = Field(None, description="Changes to noise.")  # type: ignore[valid-type]
    filters: Optional[FiltersOverride] = Field(None, description="Changes to filters.")  # type: ignore[valid-type]
    init: Optional[InitOverride] = Field(None, description="Changes to init.")  # type: ignore[valid-type]


class ModelEntry(Section):
    """One student model of the experiment; every model runs once per seed."""

    kind: ModelKind = Field(
        description="Learning rule: 'BP' (backprop: feedback = transposed forward weights), 'FA' (feedback "
        "alignment: fixed random feedback, never updated whatever eta_bw is) or 'PAL' (phaseless alignment learning "
        "of the feedback)."
    )
    name: Optional[Name] = Field(
        None, description="Name of the model in results (unique within the experiment); null = kind."
    )
    overrides: ModelOverrides = Field(
        default_factory=ModelOverrides,
        description="Per-model changes to the shared sections (network, dynamics, plasticity, noise, filters, init).",
    )

    @field_validator("overrides", mode="before")
    @classmethod
    def _no_overrides_when_null(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_serializer("overrides")
    def _dump_only_given_overrides(self, overrides: ModelOverrides, info: SerializationInfo) -> dict[str, Any]:
        return overrides.model_dump(mode=info.mode, exclude_unset=True)

    @property
    def display_name(self) -> str:
        """The model's name in results: ``name`` or, when absent, ``kind``."""
        return self.name or self.kind


# --------------------------------------------------------------------------------------------------------------
# resolution of one model and cross-field checks
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedModel:
    """The sections of one model entry after its overrides were merged in."""

    name: str
    kind: ModelKind
    network: Network
    dynamics: Dynamics
    plasticity: Plasticity
    noise: Noise
    filters: Filters
    init: Init


@dataclass(frozen=True)
class _Issue:
    """A cross-field problem of one resolved model: where (first = primary location) and what."""

    locations: tuple[Location, ...]
    message: str


class _ResolutionError(Exception):
    """Merging a model's overrides into the shared sections gave invalid sections."""

    def __init__(self, issues: list[_Issue]) -> None:
        super().__init__("; ".join(issue.message for issue in issues))
        self.issues = issues


def _deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _given_leaves(tree: dict[str, Any], prefix: Location = ()) -> set[Location]:
    """Key paths of the values (not sub-mappings) set in a nested dict."""
    leaves: set[Location] = set()
    for key, value in tree.items():
        location = (*prefix, key)
        if isinstance(value, dict) and value:
            leaves |= _given_leaves(value, location)
        else:
            leaves.add(location)
    return leaves


def _check_lengths(resolved: ResolvedModel) -> list[_Issue]:
    layers = resolved.network.layers
    shown = format_layers(layers)
    n_weight_layers, n_hidden = len(layers) - 1, len(layers) - 2
    activation = resolved.network.activation
    expected: list[tuple[Location, list[Any] | None, int, str]] = [
        (("network", "activation"), activation if isinstance(activation, list) else None, n_weight_layers,
         "pyramidal layer"),
        (("plasticity", "eta_fw"), resolved.plasticity.eta_fw, n_weight_layers, "weight layer"),
        (("plasticity", "eta_bw"), resolved.plasticity.eta_bw, n_hidden, "hidden layer"),
        (("plasticity", "eta_IP"), resolved.plasticity.eta_IP, n_hidden, "hidden layer"),
        (("plasticity", "eta_PI"), resolved.plasticity.eta_PI, n_hidden, "hidden layer"),
        (("plasticity", "alpha"), resolved.plasticity.alpha, n_hidden, "hidden layer"),
        (("noise", "scale"), resolved.noise.scale, n_hidden, "hidden layer"),
    ]
    issues = []
    for location, values, count, per in expected:
        if values is not None and len(values) != count:
            issues.append(_Issue((location,), f"expected {count} values (one per {per} of {shown}), got {len(values)}"))
        if values is None and resolved.kind == "PAL" and location in (("plasticity", "alpha"), ("noise", "scale")):
            issues.append(_Issue((location,), f"required for PAL models: expected {count} values (one per {per} of "
                                              f"{shown}), got null"))
    return issues


def _check_time_grid(resolved: ResolvedModel) -> list[_Issue]:
    dynamics = resolved.dynamics
    issues = []
    durations: list[tuple[Location, float, str, bool]] = [
        (("dynamics", "Tpres"), dynamics.Tpres, "Tpres", True),
        (("dynamics", "settling_time"), dynamics.settling_time, "settling_time", False),
    ]
    if resolved.kind == "PAL":
        durations.append((("noise", "dtxi"), resolved.noise.dtxi, "dtxi", True))
    for location, duration, label, at_least_one_step in durations:
        steps = whole_steps(duration, dynamics.dt)
        if steps is None:
            issues.append(_Issue(
                (location,),
                f"expected a whole multiple of dt = {dynamics.dt} ms, got {label} = {duration} ms "
                f"({duration / dynamics.dt:.6g} steps)",
            ))
        elif at_least_one_step and steps < 1:
            issues.append(_Issue((location,),
                                 f"expected at least one step of dt = {dynamics.dt} ms, got {label} = {duration} ms"))
    return issues


def _check_pal_options(resolved: ResolvedModel) -> list[_Issue]:
    if resolved.kind != "PAL":
        return []
    if resolved.filters.dWPP_post_low_pass and not resolved.plasticity.dWPP_use_activation:
        return [_Issue(
            (("filters", "dWPP_post_low_pass"), ("plasticity", "dWPP_use_activation")),
            "dWPP_post_low_pass: true is not supported together with plasticity.dWPP_use_activation: false: that "
            "combination crashes in the reference and has no defined behaviour; set dWPP_post_low_pass: false or "
            "dWPP_use_activation: true",
        )]
    return []


def _check_shared_by_all_runs(given: dict[str, Any], shared: dict[str, Any]) -> list[_Issue]:
    """Settings every run of an experiment shares (one layer axis and one time grid in the results store)."""
    issues = []
    for section, field_name, reason in (
        ("network", "layers", "the results store has one layer axis"),
        ("dynamics", "dt", "the results store has one time axis"),
        ("dynamics", "Tpres", "all runs see the same input protocol"),
        ("dynamics", "settling_time", "all runs see the same input protocol"),
    ):
        value = (given.get(section) or {}).get(field_name)
        if value is not None and value != shared[section][field_name]:
            issues.append(_Issue(
                ((section, field_name),),
                f"cannot differ between models ({reason}): expected the shared value "
                f"{shared[section][field_name]!r} or no override, got {value!r}; use a separate experiment instead",
            ))
    return issues


# --------------------------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------------------------


# Settings added after palmc had written stores, left out of an experiment's text (``to_yaml``) at their defaults:
# an experiment that does not use them keeps the text, and so the identity (``experiment_sha256``), its stores were
# written with, so they still resume and ``palmc reproduce`` still reuses them.
LATER_SETTINGS: dict[str, tuple[str, ...]] = {"plasticity": ("eta_decay", "eta_decay_after", "eta_decay_rates")}


class Experiment(Section):
    """A palmc experiment: one network and protocol, several student models, each run once per seed."""

    name: Name = Field(
        description="Name of the experiment (letters, digits, '_', '.', '+', '-'); the default store is "
        "results/<name>.zarr."
    )
    description: str = Field("", description="Free text describing the experiment.")
    task: Task = Field(
        description="'bw_only': only the feedback and lateral weights learn, there is no target. 'fw_bw': a teacher "
        "network of the same shape provides targets and all weights learn. 'supervised': the targets are the labels "
        "of a dataset (input.dataset), all weights learn, and the accuracy is evaluated (evaluation)."
    )
    network: Network = Field(description="Layer widths and activation functions.")
    dynamics: Dynamics = Field(default_factory=Dynamics, description="Time grid, conductances and prospectivity.")
    plasticity: Plasticity = Field(description="Learning rates (per-layer lists) and the PAL regularizer.")
    noise: Noise = Field(default_factory=Noise, description="PAL only: apical noise.")
    filters: Filters = Field(default_factory=Filters, description="PAL only: filters and regularizer options.")
    init: Init = Field(default_factory=Init, description="Initial weights and state of students and teacher.")
    input: Input = Field(default_factory=Input, description="Input patterns, dataset size and epochs.")
    evaluation: Evaluation = Field(
        default_factory=Evaluation, description="Task supervised: how often test and training accuracy are measured."
    )
    models: list[ModelEntry] = Field(
        min_length=1, description="The student models; each runs once per seed. Names must be unique."
    )
    seeds: Annotated[list[Seed], AfterValidator(_check_unique)] = Field(
        min_length=1,
        description="Random seeds, one run per seed and model (unique integers in [0, 2**32)). The input patterns "
        "and the fw_bw teacher are derived from the first seed, so all runs see the same data.",
    )
    recording: Recording = Field(default_factory=Recording, description="Recorded variables and recording interval.")
    output: Output = Field(default_factory=Output, description="The results store.")
    compute: Compute = Field(default_factory=Compute, description="Execution options (do not change results).")
    sweep: Optional[Sweep] = Field(
        None,
        description="Parameter sweep: each combination of values is a variant (a point of the store's 'variant' "
        "dimension) that runs every model on every seed. Null = no sweep, no variant dimension.",
    )

    _source_text: Optional[tuple[str, dict[str, Any]]] = PrivateAttr(default=None)

    # ---- validation --------------------------------------------------------------------------------------------

    @model_validator(mode="after")
    def _complete_and_check(self) -> "Experiment":
        """Fill task-dependent defaults, then run the cross-field checks; raise all problems at once."""
        if self.recording.variables is None:
            self.recording.variables = list(DEFAULT_VARIABLES[self.task])  # type: ignore[arg-type]
        if self.output.store is None:
            self.output.store = f"results/{self.name}.zarr"
        for entry in self.models:
            if entry.name is None:
                entry.name = entry.kind
        problems = self.find_problems()
        if problems:
            summary = "; ".join(f"{_dotted(location)}: {message}" for location, message in problems)
            raise PydanticCustomError("experiment_checks", "{summary}", {"summary": summary, "problems": problems})
        return self

    def find_problems(self) -> list[tuple[Location, str]]:
        """Cross-field problems as (location, message); location is a key path from the experiment's root."""
        problems: list[tuple[Location, str]] = []
        names = [entry.display_name for entry in self.models]
        for index, name in enumerate(names):
            if name in names[:index]:
                problems.append((("models", index, "name"),
                                 f"expected a unique model name, got {name!r} a second time (entry "
                                 f"{names.index(name)} has it; give the entries distinct 'name's)"))
        if self.task == "bw_only" and self.recording.variables:
            for index, variable in enumerate(self.recording.variables):
                if variable in FW_BW_ONLY_VARIABLES:
                    problems.append((("recording", "variables", index),
                                     f"{variable!r} exists only in task fw_bw (bw_only has no target), got it in "
                                     f"a bw_only experiment"))
        problems += self._model_problems()
        problems += self._dataset_problems()
        if not problems:
            total_steps = self.protocol().total_steps
            if self.recording.every > total_steps:
                problems.append((("recording", "every"),
                                 f"expected at most the run's {total_steps} integration steps (else nothing is "
                                 f"recorded), got {self.recording.every}"))
        if self.sweep is not None and not problems:
            problems += self._sweep_problems()
        return problems

    def _dataset_problems(self) -> list[tuple[Location, str]]:
        """Task supervised needs a dataset that fits the network (read here, so a bad one stops before a run)."""
        if self.task != "supervised":
            given = [(("input", "dataset"), self.input.dataset is not None),
                     (("input", "target"), "target" in self.input.model_fields_set),
                     (("evaluation",), "evaluation" in self.model_fields_set)]
            return [(location, f"used only by task supervised, got it in task {self.task} (remove "
                               f"{_dotted(location)} or set task: supervised)") for location, present in given if present]
        if self.input.dataset is None:
            return [(("input", "dataset"), "required for task supervised: expected 'yinyang' or a file (a mapping "
                                           "with source: file and path)")]
        location: Location = ("input", "dataset") + (("path",) if self.input.dataset.source == "file" else ())
        try:
            data = self.labelled_data()
        except DatasetError as error:
            return [(location, str(error))]
        problems: list[tuple[Location, str]] = []
        for name in self.model_names():
            try:
                target = self.input.target
                target_voltages(data.y_train[:1], data.n_classes, target.on, target.off, target.kind,
                                self.model_params(name).activations[-1])
            except DatasetError as error:
                problems.append((("input", "target", "kind"), f"model {name!r}: {error}"))
            except _ResolutionError:
                pass  # reported by _model_problems
        return problems

    def labelled_data(self) -> "LabelledData":
        """Task supervised: the dataset, checked against the network's input and output widths."""
        spec = self.input.dataset
        if spec is None:
            raise DatasetError("task supervised needs input.dataset")
        layers = self.network.layers
        if spec.source == "yinyang":
            data = yinyang_data(spec.train_size, spec.train_seed, spec.test_size, spec.test_seed)
            arrays = {"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test, "y_test": data.y_test}
            source = "yinyang"
        else:
            assert spec.path is not None
            arrays, source = read_arrays(spec.path, spec.array_names()), spec.path
        return check_arrays(arrays, layers[0], layers[-1], source)

    def _sweep_problems(self) -> list[tuple[Location, str]]:
        """Problems of the sweep's paths, then of each variant it makes (reported at the swept field)."""
        assert self.sweep is not None
        settings = self.to_dict()
        problems = structural_problems(self.sweep, settings)
        if problems:
            return problems
        kinds = {path: ("zip" if path in self.sweep.zip else "grid") for path in self.sweep.paths()}
        seen: set[tuple[Location, str]] = set()
        for values in self.sweep.combinations():
            try:
                Experiment.model_validate(apply_values(settings, values))
            except ValidationError as error:
                for err in error.errors():
                    found = (err.get("ctx") or {}).get("problems") or [(tuple(err["loc"]), describe_error(err, tuple(err["loc"])))]
                    for location, message in found:
                        where = _dotted(tuple(location))
                        swept = next((p for p in values if where == p or where.startswith(p + ".")
                                      or where.startswith(p + "[")), None)
                        at: Location = ("sweep", kinds[swept], swept) if swept else ("sweep",)
                        key = (at, f"in variant {variant_label(values)}: {where}: {message}")
                        if key not in seen:
                            seen.add(key)
                            problems.append(key)
        return problems

    def _model_problems(self) -> list[tuple[Location, str]]:
        shared = {section: getattr(self, section).model_dump() for section in OVERRIDABLE_SECTIONS}
        # problem at a shared location -> names of the models it affects; override problems are reported as is
        shared_problems: dict[tuple[Location, str], list[str]] = {}
        problems: list[tuple[Location, str]] = []
        for index, entry in enumerate(self.models):
            given = entry.overrides.model_dump(exclude_unset=True)
            given_leaves = _given_leaves(given)
            override_root: Location = ("models", index, "overrides")
            protocol_issues = _check_shared_by_all_runs(given, shared)
            issues = list(protocol_issues)
            try:
                resolved = self._resolve_entry(entry)
            except _ResolutionError as error:
                issues += error.issues
            else:
                issues += _check_lengths(resolved) + _check_pal_options(resolved)
                if not protocol_issues:  # the time grid is only meaningful with the shared dt
                    issues += _check_time_grid(resolved)
            for issue in issues:
                overridden = [loc for loc in issue.locations if any(loc[:n] in given_leaves
                                                                    for n in range(1, len(loc) + 1))]
                if overridden:
                    problems.append(((*override_root, *overridden[0]), issue.message))
                else:
                    shared_problems.setdefault((issue.locations[0], issue.message), []).append(entry.display_name)
        all_names = [entry.display_name for entry in self.models]
        for (location, message), affected in shared_problems.items():
            if len(all_names) > 1 and affected != all_names:
                which = ", ".join(repr(name) for name in affected)
                message = f"for model{'s' if len(affected) > 1 else ''} {which}: {message}"
            problems.append((location, message))
        return problems

    def _resolve_entry(self, entry: ModelEntry) -> ResolvedModel:
        given = entry.overrides.model_dump(exclude_unset=True)
        sections: dict[str, Any] = {}
        issues: list[_Issue] = []
        for section in OVERRIDABLE_SECTIONS:
            current: Section = getattr(self, section)
            if given.get(section):
                merged = _deep_merge(current.model_dump(), given[section])
                try:
                    current = type(current).model_validate(merged)
                except ValidationError as error:
                    issues += [
                        _Issue(((section, *err["loc"]),), describe_error(err, (section, *err["loc"])))
                        for err in error.errors()
                    ]
            sections[section] = current
        if issues:
            raise _ResolutionError(issues)
        return ResolvedModel(name=entry.display_name, kind=entry.kind, **sections)

    # ---- comparison --------------------------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        """Experiments are equal when their settings are equal (the original YAML text is not compared)."""
        if not isinstance(other, Experiment):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    # ---- resolution to engine records --------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Names of the models in the order they are listed."""
        return [entry.display_name for entry in self.models]

    def model_entry(self, name: str) -> ModelEntry:
        """The model entry called ``name``."""
        for entry in self.models:
            if entry.display_name == name:
                return entry
        raise KeyError(f"no model named {name!r} in experiment {self.name!r}; models: {', '.join(self.model_names())}")

    def resolved(self, name: str) -> ResolvedModel:
        """The sections of model ``name`` after its overrides."""
        return self._resolve_entry(self.model_entry(name))

    def model_params(self, name: str) -> ModelParams:
        """The engine parameters of model ``name`` (overrides applied, activation expanded per pyramidal layer)."""
        model = self.resolved(name)
        network, dynamics, plasticity = model.network, model.dynamics, model.plasticity
        noise, filters, init = model.noise, model.filters, model.init
        n_pyramidal = len(network.layers) - 1
        activations = (
            tuple(network.activation) if isinstance(network.activation, list) else (network.activation,) * n_pyramidal
        )
        return ModelParams(
            model=model.kind,
            layers=tuple(network.layers),
            activations=activations,
            dt=dynamics.dt,
            Tpres=dynamics.Tpres,
            settling_time=dynamics.settling_time,
            gl=dynamics.gl,
            gbas=dynamics.gbas,
            gapi=dynamics.gapi,
            gden=dynamics.gden,
            gnI=dynamics.gnI,
            gntgt=dynamics.gntgt,
            taur=dynamics.taur,
            eta_fw=tuple(plasticity.eta_fw),
            eta_bw=tuple(plasticity.eta_bw),
            eta_IP=tuple(plasticity.eta_IP),
            eta_PI=tuple(plasticity.eta_PI),
            alpha=tuple(plasticity.alpha or ()),
            dWPP_use_activation=plasticity.dWPP_use_activation,
            eta_decay=plasticity.eta_decay,
            eta_decay_after=plasticity.eta_decay_after,
            eta_decay_rates=tuple(plasticity.eta_decay_rates),
            noise_type=noise.type,
            noise_mode=noise.mode,
            noise_scale=tuple(noise.scale or ()),
            tauxi=noise.tauxi,
            dtxi=noise.dtxi,
            tauHP=filters.tauHP,
            tauLO=filters.tauLO,
            pyr_hi_pass=filters.pyr_hi_pass,
            dWPP_low_pass=filters.dWPP_low_pass,
            dWPP_r_low_pass=filters.dWPP_r_low_pass,
            dWPP_post_low_pass=filters.dWPP_post_low_pass,
            inter_low_pass=filters.inter_low_pass,
            gate_regularizer=filters.gate_regularizer,
            varphi_regularizer=filters.varphi_regularizer,
            init_WPP_range=tuple(init.WPP_range),
            init_WIP_range=tuple(init.WIP_range),
            init_BPP_range=tuple(init.BPP_range),
            init_BPI_range=tuple(init.BPI_range),
            init_teacher_WPP_range=tuple(init.teacher.WPP_range),
            init_teacher_WIP_range=tuple(init.teacher.WIP_range),
            init_teacher_BPP_range=tuple(init.teacher.BPP_range),
            init_teacher_BPI_range=tuple(init.teacher.BPI_range),
            init_in_SPS=init.in_SPS,
            copy_teacher_weights=init.copy_teacher_weights,
            copy_teacher_voltages=init.copy_teacher_voltages,
        )

    def variants(self) -> list[tuple[dict[str, Any], "Experiment"]]:
        """({swept path: value}, experiment of that variant) per variant; ``[({}, self)]`` without a sweep.

        The values are read back from the validated variant, so they have the schema's types (1 -> 1.0).
        """
        return list(self.iter_variants())

    def iter_variants(self) -> Iterator[tuple[dict[str, Any], "Experiment"]]:
        """``variants()`` one at a time (a large sweep's variant experiments need not all be in memory at once)."""
        if self.sweep is None:
            yield {}, self
            return
        settings = self.to_dict()
        for values in self.sweep.combinations():
            variant = Experiment.model_validate(apply_values(settings, values))
            resolved = variant.to_dict()
            yield {path: get_path(resolved, path) for path in values}, variant

    def protocol(self) -> Protocol:
        """The time course shared by every run: Tp = round(Tpres/dt) and S = round(settling_time/dt) steps."""
        steps_per_presentation = round(self.dynamics.Tpres / self.dynamics.dt)
        settling_steps = round(self.dynamics.settling_time / self.dynamics.dt)
        if self.task != "supervised":
            return Protocol(task=self.task, dataset_size=self.input.dataset_size, epochs=self.input.epochs,
                            steps_per_presentation=steps_per_presentation, settling_steps=settling_steps)
        data, target = self.labelled_data(), self.input.target
        return Protocol(
            task=self.task, dataset_size=data.n_train, epochs=self.input.epochs,
            steps_per_presentation=steps_per_presentation, settling_steps=settling_steps, data=data,
            target=TargetMap(on=target.on, off=target.off, kind=target.kind), eval_every=self.evaluation.every,
            eval_train_samples=min(self.evaluation.train_samples, data.n_train),
        )

    # ---- YAML --------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON types) of every setting, defaults included; empty overrides are left out."""
        data = self.model_dump(mode="json")
        if data.get("sweep") is None:
            data.pop("sweep", None)
        if self.task != "supervised":  # settings only task supervised reads (their defaults; the text stays as before)
            for key in ("dataset", "target"):
                data["input"].pop(key, None)
            data.pop("evaluation", None)
        for entry in data["models"]:
            if not entry["overrides"]:
                del entry["overrides"]
        return data

    def to_yaml(self) -> str:
        """The experiment as YAML text with every setting explicit, except settings added in later versions while
        they are at their defaults (``LATER_SETTINGS``); parsing it gives an equal experiment."""
        data = self.to_dict()
        for section, names in LATER_SETTINGS.items():
            defaults = type(self).model_fields[section].annotation.model_fields  # type: ignore[union-attr]
            for name in names:
                if data[section][name] == defaults[name].get_default(call_default_factory=True):
                    del data[section][name]
        return dump_yaml(data)

    @property
    def yaml_text(self) -> str:
        """The YAML text the experiment was parsed from (unchanged since), else :meth:`to_yaml`."""
        original = self._source_text
        if original is not None and original[1] == self.model_dump():
            return original[0]
        return self.to_yaml()

    def remember_source_text(self, text: str) -> None:
        """Keep the text this experiment was parsed from, for :attr:`yaml_text`."""
        self._source_text = (text, self.model_dump())


def _dotted(location: Location) -> str:
    """``('models', 1, 'overrides', 'noise')`` -> ``models[1].overrides.noise``."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def dotted_location(location: Location) -> str:
    """Public form of the dotted field path used in error messages."""
    return _dotted(location)


__all__ = [
    "ACTIVATIONS",
    "DEFAULT_VARIABLES",
    "FW_BW_ONLY_VARIABLES",
    "scheduler_address_problem",
    "MODEL_KINDS",
    "NOISE_MODES",
    "NOISE_TYPES",
    "PAL_ONLY_VARIABLES",
    "RECORDABLE_VARIABLES",
    "TASKS",
    "Compute",
    "Dataset",
    "Dynamics",
    "Evaluation",
    "Experiment",
    "Filters",
    "Init",
    "Input",
    "ModelEntry",
    "ModelOverrides",
    "Network",
    "Noise",
    "Output",
    "Plasticity",
    "Recording",
    "ResolvedModel",
    "Target",
    "TeacherInit",
    "describe_error",
    "dotted_location",
    "format_layers",
    "show_value",
    "whole_steps",
]
