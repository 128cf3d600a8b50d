"""The compiled engine's packed copy of the state, and the per-run tables of constants the kernels read.

Two layouts (one per kernel): ``NeuronPacked`` (neurons.py) holds vectors as (R, n_entries, W) and weights
*transposed* as (R, n_entries, W, W) with ``Wt[b, a] = W[a, b]``, W = the widest layer rounded up to a multiple of
four, zero padding: mat-vecs and outer-product updates run over contiguous postsynaptic indices in blocks of four.
``LanePacked`` (lanes.py) puts the runs innermost, in blocks of four lanes (``Lanes``).
"""

from __future__ import annotations

import numpy as np

from palmc.engine.compiled.activations import ACTIVATION_CODES
from palmc.engine.compiled.feedback import regularizer_codes
from palmc.engine.compiled.mt19937 import temper_all
from palmc.engine.state import BatchParams, State

LANES = 4  # runs per block of the lane layout: one AVX2 register of float64

from palmc.engine.tasks import Simulation

# -- state fields and how they are packed -------------------------------------------------------------------
# Order matters: the kernel takes these arrays as arguments in exactly this order.
VEC_P = ("uP", "uP_old", "uP_breve", "rP_breve", "rP_breve_HI", "vbas", "noise", "r_LO", "post_LO")  # L entries
VEC_I = ("uI", "uI_old", "uI_breve", "rI_breve", "vden")  # L-1 entries, interneuron sizes
VEC_A = ("vapi", "vapi_noise")  # L-1 entries, hidden pyramidal sizes
MAT_W = ("WPP", "dWPP", "dWPP_LO")  # L entries: (post layers[i+1], pre layers[i])
MAT_I = ("WIP", "dWIP")  # L-1 entries: (interneurons layers[i+2], pre layers[i+1])
MAT_B = ("BPP", "dBPP", "BPI", "dBPI")  # L-1 entries: (post layers[i+1], pre layers[i+2])
PLAIN = ("r0", "r0_LO", "noise_counter")
VEC_FIELDS = VEC_P + VEC_I + VEC_A
MAT_FIELDS = MAT_W + MAT_I + MAT_B
KNOWN_FIELDS = frozenset(("step",) + VEC_FIELDS + MAT_FIELDS + PLAIN)

NOISE_MODES = {"const": 0, "uP": 1, "uP_breve": 2, "vapi": 3}

# columns of the per-run scalar table ``rp`` (R, N_RP)
(RP_TAUR_TAU_I, RP_TAU_I, RP_TAU_OUT_NOTGT, RP_GBAS, RP_GAPI, RP_GDEN, RP_GNI, RP_GNTGT, RP_DT_OVER_TAULO,
 RP_DT_OVER_TAUHP, RP_C_HID, RP_C_OUT, RP_C_DEN, RP_INV_TAUXI, RP_SQRT_DT_TAUXI, RP_PERIOD) = range(16)
N_RP = 16
# rows of the per-run, per-layer table ``lp`` (R, N_LP, L); hidden-only rows use the first L-1 entries
(LP_TAU_P, LP_TAUR_TAU_P, LP_DT_ETA_FW, LP_DT_ETA_IP, LP_DT_ETA_PI, LP_ETA_PI_ON, LP_DT_ETA_BW, LP_DT_ALPHA_ETA_BW,
 LP_SCALE) = range(9)
N_LP = 9
# columns of the per-run flag table ``fl`` (R, N_FL)
(FL_BP, FL_PAL, FL_OU, FL_MODE, FL_USE_ACT, FL_HI_PASS, FL_W_LO, FL_R_LP, FL_POST_LP, FL_INTER_LP, FL_REGULARIZER,
 FL_PERIOD_INT) = range(12)
N_FL = 12


def tables(p: BatchParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kernels' per-run tables (rp, lp, fl), layer sizes and activation codes, from the batch's parameters
    and derived constants (BatchParams), copied as they are."""
    R, L = p.n_runs, len(p.layers) - 1
    rp = np.zeros((R, N_RP))
    rp[:, RP_TAUR_TAU_I] = p.taur_tau_I
    rp[:, RP_TAU_I] = p.tau_I
    rp[:, RP_TAU_OUT_NOTGT] = p.tau_P_out_notgt
    rp[:, RP_GBAS], rp[:, RP_GAPI], rp[:, RP_GDEN], rp[:, RP_GNI], rp[:, RP_GNTGT] = p.gbas, p.gapi, p.gden, p.gnI, p.gntgt
    rp[:, RP_DT_OVER_TAULO] = p.dt_over_tauLO
    rp[:, RP_DT_OVER_TAUHP] = p.dt_over_tauHP
    rp[:, RP_C_HID], rp[:, RP_C_OUT], rp[:, RP_C_DEN] = p.c_hid, p.c_out, p.c_den
    rp[:, RP_INV_TAUXI] = p.inv_tauxi
    rp[:, RP_SQRT_DT_TAUXI] = p.sqrt_dt_tauxi
    rp[:, RP_PERIOD] = p.noise_period
    lp = np.zeros((R, N_LP, L))
    for i in range(L):
        lp[:, LP_TAU_P, i] = p.tau_P[i]
        lp[:, LP_TAUR_TAU_P, i] = p.taur_tau_P[i]
        lp[:, LP_DT_ETA_FW, i] = p.dt_eta_fw[i]
    for i in range(L - 1):
        lp[:, LP_DT_ETA_IP, i] = p.dt_eta_IP[i]
        lp[:, LP_DT_ETA_PI, i] = p.dt_eta_PI[i]
        lp[:, LP_ETA_PI_ON, i] = p.eta_PI[i] != 0
        lp[:, LP_DT_ETA_BW, i] = p.dt_eta_bw[i]
        lp[:, LP_DT_ALPHA_ETA_BW, i] = p.dt_alpha_eta_bw[i]
        lp[:, LP_SCALE, i] = p.noise_scale[i]
    fl = np.zeros((R, N_FL), dtype=np.int64)
    fl[:, FL_BP], fl[:, FL_PAL], fl[:, FL_OU] = p.is_bp, p.is_pal, p.noise_ou
    fl[:, FL_MODE] = [NOISE_MODES.get(m, 0) for m in p.noise_mode]
    fl[:, FL_USE_ACT], fl[:, FL_HI_PASS], fl[:, FL_W_LO] = p.use_activation, p.pyr_hi_pass, p.dWPP_low_pass
    fl[:, FL_R_LP], fl[:, FL_POST_LP], fl[:, FL_INTER_LP] = p.r_low_pass, p.post_low_pass, p.inter_low_pass
    fl[:, FL_REGULARIZER] = regularizer_codes(p)
    integral = (p.noise_period >= 1) & (p.noise_period < 2**52) & (p.noise_period == np.floor(p.noise_period))
    fl[:, FL_PERIOD_INT] = np.where(integral, p.noise_period, 0).astype(np.int64)
    layers = np.asarray(p.layers, dtype=np.uint64)
    acts = np.array([ACTIVATION_CODES[a] for a in p.activations], dtype=np.int64)
    return rp, lp, fl, layers, acts


def shapes_of(layers: tuple[int, ...]) -> dict[str, list[tuple[int, ...]]]:
    """Engine list entry shapes (without the run axis) of every packed field."""
    L = len(layers) - 1
    out: dict[str, list[tuple[int, ...]]] = {}
    for name in VEC_P:
        out[name] = [(layers[i + 1],) for i in range(L)]
    for name in VEC_I:
        out[name] = [(layers[i + 2],) for i in range(L - 1)]
    for name in VEC_A:
        out[name] = [(layers[i + 1],) for i in range(L - 1)]
    for name in MAT_W:
        out[name] = [(layers[i + 1], layers[i]) for i in range(L)]
    for name in MAT_I:
        out[name] = [(layers[i + 2], layers[i + 1]) for i in range(L - 1)]
    for name in MAT_B:
        out[name] = [(layers[i + 1], layers[i + 2]) for i in range(L - 1)]
    return out


def entries(packed: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Views of a packed field in the engine's layout, one per list entry: (R, n), or (R, post, pre) for weights
    (undoing the padding and the transposition)."""
    if packed.ndim == 3:
        return [packed[:, i, :n] for i, (n,) in enumerate(shapes)]
    return [np.swapaxes(packed[:, i, :n_pre, :n_post], 1, 2) for i, (n_post, n_pre) in enumerate(shapes)]


def per_run_fields(state: State, shapes: dict[str, list[tuple[int, ...]]], width: int,
                    transposed: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every vector and weight field of ``state`` as one zero-padded array per field, in VEC_FIELDS and MAT_FIELDS
    order: (R, n_entries, width) and (R, n_entries, width, width), weights as W[post, pre] or, ``transposed``,
    as W[pre, post]."""
    R = state.uP[0].shape[0]
    vecs, mats = [], []
    for name in VEC_FIELDS:
        packed = np.zeros((R, max(len(shapes[name]), 1), width))
        for i, (n,) in enumerate(shapes[name]):
            packed[:, i, :n] = getattr(state, name)[i]
        vecs.append(packed)
    for name in MAT_FIELDS:
        packed = np.zeros((R, max(len(shapes[name]), 1), width, width))
        for i, (n_post, n_pre) in enumerate(shapes[name]):
            if transposed:
                packed[:, i, :n_pre, :n_post] = np.swapaxes(getattr(state, name)[i], 1, 2)
            else:
                packed[:, i, :n_post, :n_pre] = getattr(state, name)[i]
        mats.append(packed)
    return vecs, mats


class NeuronPacked:
    """The state of ``sim`` in the kernel's padded, transposed layout (plus the generators' states).

    Built once per ``advance`` call; the kernel updates these arrays in place across all its segments.
    """

    def __init__(self, sim: Simulation) -> None:
        s, R = sim.state, len(sim.runs)
        self.shapes = shapes_of(sim.params.layers)
        self.width = (max(sim.params.layers) + 3) // 4 * 4  # the kernel works on blocks of four
        self.vecs, self.mats = per_run_fields(s, self.shapes, self.width, transposed=True)
        self.arrays = dict(zip(VEC_FIELDS + MAT_FIELDS, self.vecs + self.mats))
        self.r0 = np.array(s.r0, dtype=np.float64, order="C")
        self.r0_LO = np.array(s.r0_LO, dtype=np.float64, order="C")
        self.counter = np.array(s.noise_counter, dtype=np.int64)
        self.hi_rec = np.zeros_like(self.arrays["rP_breve_HI"])
        self.generators(np.arange(R), R)
        self._views: dict[str, list[np.ndarray]] = {}

    def generators(self, generator_of_run: np.ndarray, n_generators: int) -> None:
        """Room for the generators' states; run r's is number ``generator_of_run[r]``."""
        self.generator_of_run = generator_of_run
        self.mt_key = np.zeros((n_generators, 624), dtype=np.uint32)
        self.mt_out = np.zeros((n_generators, 624), dtype=np.uint32)  # the tempered words of mt_key (_temper)
        self.mt_pos = np.zeros(n_generators, dtype=np.int64)
        self.mt_has_gauss = np.zeros(n_generators, dtype=np.int64)
        self.mt_cached = np.zeros(n_generators)

    def load_rngs(self, rngs: list[np.random.RandomState]) -> None:
        for q, rng in zip(self.generator_of_run, rngs):
            _, key, pos, has_gauss, cached = rng.get_state()
            self.mt_key[q] = key
            self.mt_pos[q], self.mt_has_gauss[q], self.mt_cached[q] = pos, has_gauss, cached
        temper_all(self.mt_key, self.mt_out)

    def store_rngs(self, rngs: list[np.random.RandomState]) -> None:
        for q, rng in zip(self.generator_of_run, rngs):
            rng.set_state(("MT19937", self.mt_key[q].copy(), int(self.mt_pos[q]),
                           int(self.mt_has_gauss[q]), float(self.mt_cached[q])))

    def views(self, name: str) -> list[np.ndarray]:
        """Engine-layout views of one packed field (r^HI as recorded): made once, valid for the whole call."""
        if name not in self._views:
            packed = self.hi_rec if name == "rP_breve_HI" else self.arrays[name]
            self._views[name] = entries(packed, self.shapes[name])
        return self._views[name]

    def show(self, state: State, names: tuple[str, ...], step: int) -> None:
        """Let ``state`` show the fields ``names`` as the recorder sees them at ``step``, without copying.

        The views follow the packed arrays, so they are valid only until the kernel runs again; the other
        fields keep their values from before the ``advance`` call until ``unpack_into`` replaces them all.
        """
        plain = {"r0": self.r0, "r0_LO": self.r0_LO, "noise_counter": self.counter}
        for name in names:
            setattr(state, name, plain[name] if name in plain else self.views(name))
        state.step = step

    def unpack_into(self, state: State, step: int) -> None:
        """Write the packed state into ``state`` (fresh contiguous arrays)."""
        for name, packed in self.arrays.items():
            setattr(state, name, [np.array(view, order="C") for view in entries(packed, self.shapes[name])])
        state.r0 = self.r0.copy()
        state.r0_LO = self.r0_LO.copy()
        state.noise_counter = self.counter.copy()
        state.step = step


# the flags that choose the kernel's code paths: equal within a block of lanes. The model (BP, FA, PAL and what
# comes with it: the noise, dW^PP's low-pass, eta_PI = 0) may differ by lane, so the three models of a figure
# fill blocks together.
_PATH_FLAGS = (FL_USE_ACT, FL_HI_PASS, FL_R_LP, FL_POST_LP, FL_INTER_LP, FL_REGULARIZER)


class Lanes:
    """Which run sits in which lane: runs that take the same code paths share blocks of ``LANES`` lanes.

    Runs keep their order within a group; a group's last block is filled with padding lanes that repeat its
    first run (finite values, no draws) and are never read back.
    """

    def __init__(self, fl: np.ndarray) -> None:
        groups: dict[tuple[int, ...], list[int]] = {}
        for r, key in enumerate(map(tuple, fl[:, _PATH_FLAGS].tolist())):
            groups.setdefault(key, []).append(r)
        run_of: list[int] = []
        real: list[int] = []
        for group in groups.values():
            padding = -len(group) % LANES
            run_of += group + [group[0]] * padding
            real += [1] * len(group) + [0] * padding
        self.n_blocks = len(run_of) // LANES
        self.run_of = np.array(run_of, dtype=np.int64).reshape(self.n_blocks, LANES)
        self.real = np.array(real, dtype=np.int64).reshape(self.n_blocks, LANES)
        self.lane_of_run = np.empty(len(fl), dtype=np.int64)  # flat lane index g * LANES + l of each run
        self.lane_of_run[self.run_of.ravel()[self.real.ravel() == 1]] = np.flatnonzero(self.real.ravel())
        self.block_of_run, self.lane_in_block = np.divmod(self.lane_of_run, LANES)

    def pack(self, per_run: np.ndarray) -> np.ndarray:
        """(R, ...) -> (blocks, ..., LANES), C-contiguous."""
        lanes = per_run[self.run_of]  # (blocks, LANES, ...)
        return np.ascontiguousarray(np.moveaxis(lanes, 1, -1))

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """(blocks, ..., LANES) -> (R, ...): a fresh array of the real lanes, in run order (one gather: indices
        on the first and last axes, split by slices, put the run axis first)."""
        return packed[self.block_of_run, ..., self.lane_in_block]


class LanePacked(NeuronPacked):
    """The state of ``sim`` in the kernel's lane layout (plus the generators' states, one per lane).

    Vectors are (blocks, n_entries, width, LANES), weights (blocks, n_entries, width, width, LANES) as
    W[post, pre], width = the widest layer, zero padding. Built once per ``advance`` call; the kernel updates
    these arrays in place across all its segments. Unlike the neuron layout this one has no views in the
    engine's layout: the recorder is shown copies.
    """

    def __init__(self, sim: Simulation, lanes: Lanes) -> None:  # its own layout: no super().__init__
        s = sim.state
        self.lanes = lanes
        self.shapes = shapes_of(sim.params.layers)
        self.width = max(sim.params.layers)
        vecs, mats = per_run_fields(s, self.shapes, self.width, transposed=False)
        self.vecs, self.mats = [lanes.pack(v) for v in vecs], [lanes.pack(m) for m in mats]
        self.arrays = dict(zip(VEC_FIELDS + MAT_FIELDS, self.vecs + self.mats))
        self.r0 = lanes.pack(np.asarray(s.r0, dtype=np.float64))
        self.r0_LO = lanes.pack(np.asarray(s.r0_LO, dtype=np.float64))
        self.counter = lanes.pack(np.asarray(s.noise_counter, dtype=np.int64))
        self.hi_rec = np.zeros_like(self.arrays["rP_breve_HI"])
        self.generators(lanes.lane_of_run, lanes.n_blocks * LANES)  # padding lanes' generators stay unused

    def field(self, name: str, as_recorded: bool = False) -> list[np.ndarray] | np.ndarray:
        """One state field in the engine's layout (fresh arrays); r^HI as the recorder saw it if ``as_recorded``."""
        plain = {"r0": self.r0, "r0_LO": self.r0_LO, "noise_counter": self.counter}
        if name in plain:
            return self.lanes.unpack(plain[name])
        recorded_hi = as_recorded and name == "rP_breve_HI"
        per_run = self.lanes.unpack(self.hi_rec if recorded_hi else self.arrays[name])
        if per_run.ndim == 3:
            return [per_run[:, i, :n].copy() for i, (n,) in enumerate(self.shapes[name])]
        return [per_run[:, i, :n_post, :n_pre].copy() for i, (n_post, n_pre) in enumerate(self.shapes[name])]

    def views(self, name: str) -> list[np.ndarray]:  # type: ignore[override]
        """Copies, not views (see the class): valid as long as the caller keeps them."""
        return self.field(name, as_recorded=True)  # type: ignore[return-value]

    def show(self, state: State, names: tuple[str, ...], step: int) -> None:
        """Let ``state`` show the fields ``names`` as the recorder sees them at ``step``.

        The other fields keep their values from before the ``advance`` call until ``unpack_into`` replaces them.
        """
        for name in names:
            setattr(state, name, self.field(name, as_recorded=True))
        state.step = step

    def unpack_into(self, state: State, step: int) -> None:
        """Write the packed state into ``state`` (fresh contiguous arrays)."""
        for name in VEC_FIELDS + MAT_FIELDS + PLAIN:
            setattr(state, name, self.field(name))
        state.step = step

