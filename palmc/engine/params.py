"""Engine-level parameters of one run: a flat, validated-elsewhere record.

The pydantic experiment schema (:mod:`palmc.schema`) is what users write; it resolves, for each model of an
experiment, one :class:`ModelParams`. The engine only ever sees these, so it stays independent of file formats.

Per-layer tuples follow the network's weight layers (index ``l`` = the weights *into* network layer ``l+1``):
``eta_fw`` has one entry per forward weight layer (L entries for an L+1-layer network), ``eta_bw``, ``eta_IP``,
``eta_PI``, ``alpha`` and ``noise_scale`` one entry per hidden layer (L-1 entries). ``activations`` has one entry per
pyramidal population (network layers 1..L).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from palmc.engine.datasets import LabelledData, TargetKind

ModelKind = Literal["BP", "FA", "PAL"]
Task = Literal["bw_only", "fw_bw", "supervised"]
Activation = Literal["logistic", "hard_sigmoid", "relu", "soft_relu", "linear", "tanh"]
NoiseType = Literal["OU", "hold_white_noise"]
DecayedRate = Literal["eta_fw", "eta_bw", "eta_IP", "eta_PI"]
NoiseMode = Literal["const", "uP", "uP_breve", "vapi"]
Range = tuple[float, float]


@dataclass(frozen=True)
class ModelParams:
    """Everything that defines the dynamics of one student network (and its teacher in ``fw_bw``).

    Times are in ms, conductances in 1/ms. Field names follow the reference code so that its papers and
    parameter files map one to one.
    """

    model: ModelKind
    layers: tuple[int, ...]
    activations: tuple[Activation, ...]
    # dynamics
    dt: float = 0.01
    Tpres: float = 1.0
    settling_time: float = 100.0
    gl: float = 0.03
    gbas: float = 0.1
    gapi: float = 0.06
    gden: float = 0.1
    gnI: float = 0.06
    gntgt: float = 0.06
    taur: float = 1.0  # prospectivity factor: u_breve = u_old + taur * tau_eff * (u - u_old) / dt
    # plasticity
    eta_fw: tuple[float, ...] = ()
    eta_bw: tuple[float, ...] = ()
    eta_IP: tuple[float, ...] = ()
    eta_PI: tuple[float, ...] = ()
    alpha: tuple[float, ...] = ()
    dWPP_use_activation: bool = True
    # learning-rate schedule: after eta_decay_after epochs at the full rates, the rates named in eta_decay_rates
    # are multiplied by eta_decay once per further epoch (1: no schedule)
    eta_decay: float = 1.0
    eta_decay_after: int = 0
    eta_decay_rates: tuple[DecayedRate, ...] = ("eta_fw", "eta_bw", "eta_IP", "eta_PI")
    # PAL noise
    noise_type: NoiseType = "OU"
    noise_mode: NoiseMode = "const"
    noise_scale: tuple[float, ...] = ()
    tauxi: float = 0.1
    dtxi: float = 0.01
    # PAL filters
    tauHP: float = 0.1
    tauLO: float = 100.0
    pyr_hi_pass: bool = True
    dWPP_low_pass: bool = True
    dWPP_r_low_pass: bool = False
    dWPP_post_low_pass: bool = False
    inter_low_pass: bool = False
    gate_regularizer: bool = False
    varphi_regularizer: bool = False
    # initialisation
    init_WPP_range: Range = (-1.0, 1.0)
    init_WIP_range: Range = (-1.0, 1.0)
    init_BPP_range: Range = (-1.0, 1.0)
    init_BPI_range: Range = (-1.0, 1.0)
    init_teacher_WPP_range: Range = (-1.0, 1.0)
    init_teacher_WIP_range: Range = (-1.0, 1.0)
    init_teacher_BPP_range: Range = (-1.0, 1.0)
    init_teacher_BPI_range: Range = (-1.0, 1.0)
    init_in_SPS: bool = True
    copy_teacher_weights: bool = False
    copy_teacher_voltages: bool = False

    def with_(self, **changes: object) -> "ModelParams":
        return replace(self, **changes)


@dataclass(frozen=True)
class Protocol:
    """The time course shared by every run of a batch: settling, then epochs of shuffled step inputs."""

    task: Task
    dataset_size: int
    epochs: int
    steps_per_presentation: int  # Tp = int(Tpres / dt)
    settling_steps: int  # S = int(settling_time / dt)
    # task supervised: the data (dataset_size = its training samples), the label -> target mapping, and the
    # evaluation cadence; the arrays are left out of comparisons (the settings that made them are compared)
    data: "LabelledData | None" = field(default=None, compare=False, repr=False)
    target: "TargetMap | None" = None
    eval_every: int = 0  # evaluate every this many epochs (0: never)
    eval_train_samples: int = 0  # training samples (the first ones) evaluated for the training accuracy

    @property
    def steps_per_epoch(self) -> int:
        return self.dataset_size * self.steps_per_presentation

    @property
    def total_steps(self) -> int:
        return self.settling_steps + self.epochs * self.steps_per_epoch

    @property
    def eval_epochs(self) -> tuple[int, ...]:
        """Epochs after which the network is evaluated: 0 (after settling), every ``eval_every``-th, the last."""
        if not self.eval_every:
            return ()
        return tuple(sorted({*range(0, self.epochs + 1, self.eval_every), self.epochs}))

    @property
    def eval_steps(self) -> tuple[int, ...]:
        """Steps done at each evaluation (``eval_epochs`` in steps)."""
        return tuple(self.settling_steps + epoch * self.steps_per_epoch for epoch in self.eval_epochs)


@dataclass(frozen=True)
class TargetMap:
    """Supervised targets: ``on`` for the labelled output neuron, ``off`` for the others, as voltages or rates."""

    on: float = 1.0
    off: float = 0.0
    kind: "TargetKind" = "voltage"


@dataclass(frozen=True)
class RunSpec:
    """One run: a student of ``params`` with random seed ``seed``.

    ``input_seed`` seeds the input patterns (the reference derives it from the *first* seed of the experiment's
    seed list, so every run of an experiment sees the same patterns); ``teacher_seed_source`` is the seed the
    fw_bw teacher's own seed is drawn from (likewise the first seed of the list).
    """

    seed: int
    model_name: str
    params: ModelParams
    input_seed: int
    teacher_seed_source: int
    extra: dict[str, object] = field(default_factory=dict, compare=False)
