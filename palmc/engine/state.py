"""Simulation state and parameters, batched over the runs of a batch (leading axis R).

Lists are indexed like the reference's lists, which keeps the update rules easy to hold against it:
pyramidal index i is network layer i+1 (so the last entry is the output layer L), interneuron index i mirrors
network layer i+2, forward weight index i maps layer i onto layer i+1, and feedback weight index i (B^PP, B^PI)
maps layer i+2 onto the apical dendrites of layer i+1. The store converts to network-layer indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

from palmc.engine import equations as eq
from palmc.engine.activations import phi
from palmc.engine.init import NetworkInit
from palmc.engine.params import ModelParams

Layered = list[np.ndarray]


def _stack(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


@dataclass
class BatchParams:
    """Per-run parameters as arrays of shape (R,), derived constants included.

    Everything that shapes the arrays or the time grid (layers, activations, dt) is shared by the batch; the
    rest may differ between runs, so seeds, models and parameter variants advance together.
    """

    layers: tuple[int, ...]
    activations: tuple[str, ...]
    dt: float
    is_bp: np.ndarray
    is_pal: np.ndarray
    gl: np.ndarray
    gbas: np.ndarray
    gapi: np.ndarray
    gden: np.ndarray
    gnI: np.ndarray
    gntgt: np.ndarray
    taur: np.ndarray
    tau_P: Layered  # effective membrane time constant per pyramidal layer (output: with target conductance)
    tau_P_out_notgt: np.ndarray  # output layer without target
    tau_I: np.ndarray
    eta_fw: Layered
    eta_bw: Layered
    eta_IP: Layered
    eta_PI: Layered
    alpha: Layered
    noise_scale: Layered
    tauxi: np.ndarray
    tauHP: np.ndarray
    tauLO: np.ndarray
    noise_period: np.ndarray  # dtxi / dt, rounded to dt's decimals as the reference does
    noise_ou: np.ndarray  # OU (True) or held white noise (False)
    noise_mode: tuple[str, ...]
    use_activation: np.ndarray
    pyr_hi_pass: np.ndarray
    dWPP_low_pass: np.ndarray  # PAL only
    r_low_pass: np.ndarray  # PAL only
    post_low_pass: np.ndarray  # PAL only, and only without r_low_pass
    inter_low_pass: np.ndarray  # PAL only
    gate_regularizer: np.ndarray
    varphi_regularizer: np.ndarray  # only without gate_regularizer
    # learning-rate schedule (``for_epoch``): per-epoch factor, full-rate epochs, and which rates it scales
    eta_decay: np.ndarray
    eta_decay_after: np.ndarray
    eta_decay_rates: dict[str, np.ndarray]  # rate name (eta_fw, eta_bw, eta_IP, eta_PI) -> (R,) bool
    # derived constants, computed once here (``__post_init__``) and read by every engine
    c_hid: np.ndarray = field(init=False)  # g_bas / (g_l + g_bas + g_api): hidden layers' basal prediction
    c_out: np.ndarray = field(init=False)  # g_bas / (g_l + g_bas): the output layer's
    c_den: np.ndarray = field(init=False)  # g_den / (g_l + g_den): the interneurons' dendritic prediction
    taur_tau_P: Layered = field(init=False)  # taur tau_eff of the lookahead, per pyramidal layer
    taur_tau_I: np.ndarray = field(init=False)
    dt_eta_fw: Layered = field(init=False)  # dt eta of each plasticity rule, per layer
    dt_eta_bw: Layered = field(init=False)
    dt_eta_IP: Layered = field(init=False)
    dt_eta_PI: Layered = field(init=False)
    dt_alpha_eta_bw: Layered = field(init=False)  # PAL's weight decay dt alpha eta_bw
    dt_over_tauLO: np.ndarray = field(init=False)  # dt / tau of the low-pass and high-pass filters
    dt_over_tauHP: np.ndarray = field(init=False)
    inv_tauxi: np.ndarray = field(init=False)  # 1 / tau_xi and sqrt(dt tau_xi) of the OU noise
    sqrt_dt_tauxi: np.ndarray = field(init=False)
    _scheduled: bool = field(init=False, repr=False, compare=False)  # some run's rates change between epochs
    _by_epoch: dict[int, "BatchParams"] = field(init=False, repr=False, compare=False)  # the last epoch's

    def __post_init__(self) -> None:
        dt = self.dt
        self.c_hid = eq.basal_attenuation(self.gl, self.gbas, self.gapi)
        self.c_out = eq.output_basal_attenuation(self.gl, self.gbas)
        self.c_den = eq.dendritic_attenuation(self.gl, self.gden)
        self.taur_tau_P = [self.taur * tau for tau in self.tau_P]
        self.taur_tau_I = self.taur * self.tau_I
        self.dt_eta_fw = [dt * eta for eta in self.eta_fw]
        self.dt_eta_bw = [dt * eta for eta in self.eta_bw]
        self.dt_eta_IP = [dt * eta for eta in self.eta_IP]
        self.dt_eta_PI = [dt * eta for eta in self.eta_PI]
        self.dt_alpha_eta_bw = [dt * alpha * eta for alpha, eta in zip(self.alpha, self.eta_bw)]
        self.dt_over_tauLO = dt / self.tauLO
        self.dt_over_tauHP = dt / self.tauHP
        self.inv_tauxi = 1 / self.tauxi
        self.sqrt_dt_tauxi = np.sqrt(dt * self.tauxi)
        self._scheduled = bool(np.any(self.eta_decay != 1.0))
        self._by_epoch = {}

    def for_epoch(self, epoch: int) -> "BatchParams":
        """The parameters of (0-based) epoch ``epoch`` under the learning-rate schedule: the scheduled rates of a
        run are multiplied by eta_decay ** (epoch - eta_decay_after + 1) from epoch eta_decay_after on.

        Without a schedule in effect (every factor 1, e.g. eta_decay = 1) this is ``self``, so runs without one
        are computed exactly as before. Both engines take their rates from it (the NumPy engine at every step: the
        last epoch's answer is kept).
        """
        if not self._scheduled:
            return self
        if epoch not in self._by_epoch:
            decays = np.maximum(epoch - self.eta_decay_after + 1, 0)
            factor = np.where(decays > 0, self.eta_decay ** decays, 1.0)
            self._by_epoch.clear()
            self._by_epoch[epoch] = self if np.all(factor == 1.0) else replace(self, **{
                name: [rates * np.where(self.eta_decay_rates[name], factor, 1.0) for rates in getattr(self, name)]
                for name in ("eta_fw", "eta_bw", "eta_IP", "eta_PI")})
        return self._by_epoch[epoch]

    @property
    def n_runs(self) -> int:
        return len(self.is_pal)

    @classmethod
    def from_models(cls, models: list[ModelParams], teacher: bool = False) -> "BatchParams":
        first = models[0]
        for p in models[1:]:
            if (p.layers, p.activations, p.dt) != (first.layers, first.activations, first.dt):
                raise ValueError("runs of one batch must share layers, activations and dt")
        L = len(first.layers) - 1

        def col(name: str) -> np.ndarray:
            return _stack([getattr(p, name) for p in models])

        def per_layer(name: str, n: int) -> Layered:
            # PAL-only lists (alpha, noise_scale) may be empty for BP/FA models, which never read them
            return [_stack([getattr(p, name)[i] if getattr(p, name) else 0.0 for p in models]) for i in range(n)]

        is_pal = np.array([p.model == "PAL" for p in models])
        gl, gbas, gapi, gden, gnI, gntgt = (col(n) for n in ("gl", "gbas", "gapi", "gden", "gnI", "gntgt"))
        tau_hidden = 1 / (gl + gbas + gapi)
        tau_P = [tau_hidden for _ in range(L - 1)] + [1 / (gl + gbas + gntgt)]
        decimals = [int(np.round(-np.log10(p.dt))) for p in models]
        r_lp = is_pal & np.array([p.dWPP_r_low_pass for p in models])
        gate = is_pal & np.array([p.gate_regularizer for p in models])
        return cls(
            layers=first.layers,
            activations=first.activations,
            dt=first.dt,
            is_bp=np.array([p.model == "BP" for p in models]),
            is_pal=is_pal,
            gl=gl, gbas=gbas, gapi=gapi, gden=gden, gnI=gnI, gntgt=gntgt,
            # The prospectivity factor is a student-only patch in the reference; teachers look ahead fully.
            taur=np.ones(len(models)) if teacher else col("taur"),
            tau_P=tau_P,
            tau_P_out_notgt=1 / (gl + gbas),
            tau_I=1 / (gl + gden + gnI),
            eta_fw=per_layer("eta_fw", L),
            eta_bw=per_layer("eta_bw", L - 1),
            eta_IP=per_layer("eta_IP", L - 1),
            eta_PI=per_layer("eta_PI", L - 1),
            alpha=per_layer("alpha", L - 1),
            noise_scale=per_layer("noise_scale", L - 1),
            tauxi=col("tauxi"),
            tauHP=col("tauHP"),
            tauLO=col("tauLO"),
            noise_period=_stack([np.round(p.dtxi / p.dt, decimals=d) for p, d in zip(models, decimals)]),
            noise_ou=np.array([p.noise_type == "OU" for p in models]),
            noise_mode=tuple(p.noise_mode for p in models),
            use_activation=np.array([p.dWPP_use_activation for p in models]),
            pyr_hi_pass=np.array([p.pyr_hi_pass for p in models]),
            dWPP_low_pass=is_pal & np.array([p.dWPP_low_pass for p in models]),
            r_low_pass=r_lp,
            post_low_pass=is_pal & ~r_lp & np.array([p.dWPP_post_low_pass for p in models]),
            inter_low_pass=is_pal & np.array([p.inter_low_pass for p in models]),
            gate_regularizer=gate,
            varphi_regularizer=is_pal & ~gate & np.array([p.varphi_regularizer for p in models]),
            eta_decay=col("eta_decay"),
            eta_decay_after=np.array([p.eta_decay_after for p in models], dtype=np.int64),
            eta_decay_rates={name: np.array([name in p.eta_decay_rates for p in models])
                             for name in ("eta_fw", "eta_bw", "eta_IP", "eta_PI")},
        )


@dataclass
class State:
    """The full dynamical state of R runs after ``step`` integration steps."""

    step: int
    # pyramidal cells: somatic voltage u^P, its value one step earlier, lookahead u-breve^P and rate phi(u-breve^P)
    uP: Layered
    uP_old: Layered
    uP_breve: Layered
    rP_breve: Layered
    rP_breve_HI: Layered  # high-pass filtered rate (PAL)
    # interneurons
    uI: Layered
    uI_old: Layered
    uI_breve: Layered
    rI_breve: Layered
    # dendrites
    vbas: Layered
    vapi: Layered
    vapi_noise: Layered
    vden: Layered
    noise: Layered  # apical noise xi (PAL), one entry per pyramidal layer; the output entry stays 0
    noise_counter: np.ndarray  # (R,) int: steps since the last noise draw, shared by all hidden layers
    r0: np.ndarray  # input rates of the last step, (R, n_in)
    # weights and their last increments
    WPP: Layered
    WIP: Layered
    BPP: Layered
    BPI: Layered
    dWPP: Layered
    dWIP: Layered
    dBPP: Layered
    dBPI: Layered
    # filters (PAL options)
    dWPP_LO: Layered
    r0_LO: np.ndarray
    r_LO: Layered
    post_LO: Layered

    @classmethod
    def initial(cls, inits: list[NetworkInit], params: BatchParams, lookahead_from: list[NetworkInit] | None = None) -> "State":
        """The state before the first step.

        ``lookahead_from`` (copy_teacher_voltages) replaces u, u_old and u-breve with another network's initial
        voltages while the rates keep the values computed from the run's own voltages, as in the reference.
        """

        def stack(attr: str) -> Layered:
            per_run = [getattr(n, attr) for n in inits]
            return [np.stack([run[i] for run in per_run]) for i in range(len(per_run[0]))]

        R = len(inits)
        uP, uI = stack("uP"), stack("uI")
        acts = params.activations
        rP = [phi(acts[i])(u) for i, u in enumerate(uP)]
        rI = [phi(acts[i + 1])(u) for i, u in enumerate(uI)]
        if lookahead_from is not None:
            source = [lookahead_from[r] if lookahead_from[r] is not None else inits[r] for r in range(R)]
            uP = [np.stack([s.uP[i] for s in source]) for i in range(len(uP))]
            uI = [np.stack([s.uI[i] for s in source]) for i in range(len(uI))]
        WPP, WIP, BPP, BPI = stack("WPP"), stack("WIP"), stack("BPP"), stack("BPI")
        zeros = lambda arrays: [np.zeros_like(a) for a in arrays]  # noqa: E731
        return cls(
            step=0,
            uP=[u.copy() for u in uP], uP_old=[u.copy() for u in uP], uP_breve=[u.copy() for u in uP],
            rP_breve=rP, rP_breve_HI=[r.copy() for r in rP],
            uI=[u.copy() for u in uI], uI_old=[u.copy() for u in uI], uI_breve=[u.copy() for u in uI],
            rI_breve=rI,
            vbas=zeros(uP), vapi=zeros(uP[:-1]), vapi_noise=zeros(uP[:-1]), vden=zeros(uI),
            noise=zeros(uP), noise_counter=np.zeros(R, dtype=np.int64),
            r0=np.zeros((R, params.layers[0])),
            WPP=WPP, WIP=WIP, BPP=BPP, BPI=BPI,
            dWPP=zeros(WPP), dWIP=zeros(WIP), dBPP=zeros(BPP), dBPI=zeros(BPI),
            dWPP_LO=zeros(WPP), r0_LO=np.zeros((R, params.layers[0])), r_LO=zeros(uP), post_LO=zeros(uP),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array view of the state (for checkpoints): ``uP.0``, ``WPP.2``, ``noise_counter``..."""
        out: dict[str, np.ndarray] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                for i, a in enumerate(value):
                    out[f"{f.name}.{i}"] = a
            elif isinstance(value, np.ndarray):
                out[f.name] = value
        return out

    @classmethod
    def from_arrays(cls, step: int, arrays: dict[str, np.ndarray]) -> "State":
        kwargs: dict[str, object] = {"step": step}
        for f in fields(cls):
            if f.name == "step":
                continue
            if f.name in arrays:
                kwargs[f.name] = np.array(arrays[f.name])
            else:
                n = 0
                while f"{f.name}.{n}" in arrays:
                    n += 1
                kwargs[f.name] = [np.array(arrays[f"{f.name}.{i}"]) for i in range(n)]
        return cls(**kwargs)  # type: ignore[arg-type]
