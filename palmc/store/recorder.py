"""Buffers the records of one batch of runs for one time chunk, in the store's layout.

The engine never touches I/O: the driver calls the recorder after every step, the recorder copies the
variables it was asked for every ``every`` steps, and the writer flushes whole time chunks to the store.
"""

from __future__ import annotations

import numpy as np

from palmc.engine.tasks import Simulation
from palmc.store.layout import Variable, layer_shapes, record_shape


class ChunkRecorder:
    """Collects up to ``chunk_records`` records of ``variables`` for the R runs of ``sim``."""

    def __init__(self, sim: Simulation, variables: list[Variable], every: int, chunk_records: int) -> None:
        self.variables = variables
        self.every = every
        self.chunk_records = chunk_records
        self.layers = sim.params.layers
        self.n_runs = len(sim.runs)
        self.not_pal = ~sim.params.is_pal
        self.buffers = {
            v.name: np.full((chunk_records, *record_shape(v, self.layers), self.n_runs), np.nan) for v in variables
        }
        self.steps: list[int] = []
        # per-layer variables: for each engine list entry, where it goes in a record and how its (R, ...) array
        # turns into (..., R); worked out once, since a record is taken every few milliseconds of kernel time
        self.placements = {
            v.name: [(entry, (layer, *(slice(0, n) for n in shape)), (*range(1, len(shape) + 1), 0))
                     for entry, (layer, shape) in enumerate(layer_shapes(v, self.layers))]
            for v in variables if v.kind not in ("input", "output", "scalar")
        }
        self.nan_runs = np.flatnonzero(self.not_pal) if self.not_pal.any() else None
        # where each variable holds data (False on NaN padding of ragged layers), for divergence checks
        self.valid = {v.name: self._valid_mask(v) for v in variables}

    def _valid_mask(self, var: Variable) -> np.ndarray:
        mask = np.zeros(record_shape(var, self.layers), dtype=bool)
        if var.kind == "input":
            mask[: self.layers[0]] = True
        elif var.kind == "output":
            mask[: self.layers[-1]] = True
        elif var.kind == "scalar":
            mask[...] = True
        else:
            for _, where, _ in self.placements[var.name]:
                mask[where] = True
        return mask

    def first_nonfinite_step(self, run: int) -> int | None:
        """First buffered step at which ``run`` recorded NaN or inf where a value exists."""
        checked = [v.name for v in self.variables
                   if v.kind not in ("output", "scalar") and not (v.pal_only and self.not_pal[run])]
        for row, step in enumerate(self.steps):
            for name in checked:
                if not np.isfinite(self.buffers[name][row][..., run][self.valid[name]]).all():
                    return step
        return None

    @property
    def full(self) -> bool:
        return len(self.steps) >= self.chunk_records

    def __call__(self, sim: Simulation) -> None:
        k = sim.state.step
        if k % self.every:
            return
        row = len(self.steps)
        for var in self.variables:
            self._fill(self.buffers[var.name][row], var, sim)
        self.steps.append(k)

    def _fill(self, out: np.ndarray, var: Variable, sim: Simulation) -> None:
        state = sim.state
        if var.kind == "input":
            out[: self.layers[0]] = sim.current_input.T
            return
        if var.kind in ("output", "scalar"):
            target = sim.current_target
            if target is None:
                out[...] = np.nan
                return
            error = state.uP_breve[-1] - target
            if var.name == "target":
                out[: self.layers[-1]] = target.T
            elif var.name == "error":
                out[: self.layers[-1]] = error.T
            else:  # MSE: the reference's |e|^2 via the Euclidean norm
                out[...] = np.sqrt(np.einsum("ri,ri->r", error, error)) ** 2
            return
        values = getattr(state, var.name)
        for entry, where, axes in self.placements[var.name]:
            out[where] = values[entry].transpose(axes)
        if var.pal_only and self.nan_runs is not None:
            out[..., self.nan_runs] = np.nan

    def take(self) -> tuple[list[int], dict[str, np.ndarray]]:
        """The buffered records (steps, name -> view (n, *record_shape, R)); empties the buffer."""
        n = len(self.steps)
        steps, data = self.steps, {name: buf[:n] for name, buf in self.buffers.items()}
        # The buffers are reused as they are: every record overwrites all the entries that hold data, and the
        # NaN padding never changes. The returned views are valid until the next record.
        self.steps = []
        return steps, data
