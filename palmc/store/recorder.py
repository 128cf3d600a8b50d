"""Buffers the records of one batch of runs for one time chunk, in the store's layout.

The engine never touches I/O: the driver calls the recorder after every step, the recorder copies the
variables it was asked for every ``every`` steps, and the writer flushes whole time chunks to the store.
"""

from __future__ import annotations

import numpy as np

from palmc.engine.tasks import Simulation
from palmc.engine.variables import Variable, fields_read
from palmc.store.layout import placements, valid_mask


class ChunkRecorder:
    """Collects up to ``chunk_records`` records of ``variables`` for the R runs of ``sim``."""

    def __init__(self, sim: Simulation, variables: list[Variable], every: int, chunk_records: int) -> None:
        self.variables = variables
        # the State fields a record reads: a compiled engine need keep only these current at record steps
        self.fields_read: tuple[str, ...] = fields_read(variables)
        self.every = every
        self.layers = sim.params.layers
        self.n_runs = len(sim.runs)
        # for each variable, the runs whose model does not have it (recorded as NaN)
        kinds = [run.params.model for run in sim.runs]
        self.runs_without = {v.name: np.flatnonzero([kind not in v.models for kind in kinds]) for v in variables}
        self.buffers = {
            v.name: np.full((chunk_records, *v.record_shape(self.layers), self.n_runs), np.nan) for v in variables
        }
        self.steps: list[int] = []
        # worked out once, since a record is taken every few milliseconds of kernel time
        self.placements = {v.name: placements(v, self.layers) for v in variables if v.place.per_layer}
        # where each variable holds data (False on NaN padding of ragged layers), for divergence checks
        self.valid = {v.name: valid_mask(v, self.layers) for v in variables}

    def first_nonfinite_step(self, run: int) -> int | None:
        """First buffered step at which ``run`` recorded NaN or inf where a value exists."""
        checked = [v.name for v in self.variables
                   if v.kind not in ("output", "scalar") and run not in self.runs_without[v.name]]
        for row, step in enumerate(self.steps):
            for name in checked:
                if not np.isfinite(self.buffers[name][row][..., run][self.valid[name]]).all():
                    return step
        return None

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
            if var.name == "target":
                out[: self.layers[-1]] = target.T
                return
            error = state.uP_breve[-1] - target
            if var.name == "error":
                out[: self.layers[-1]] = error.T
            else:  # MSE: the reference's |e|^2 via the Euclidean norm
                out[...] = np.sqrt(np.einsum("ri,ri->r", error, error)) ** 2
            return
        values = getattr(state, var.name)
        for entry, where, axes in self.placements[var.name]:
            out[where] = values[entry].transpose(axes)
        if len(self.runs_without[var.name]):
            out[..., self.runs_without[var.name]] = np.nan

    def take(self) -> tuple[list[int], dict[str, np.ndarray]]:
        """The buffered records (steps, name -> view (n, *record_shape, R)); empties the buffer."""
        n = len(self.steps)
        steps, data = self.steps, {name: buf[:n] for name, buf in self.buffers.items()}
        # The buffers are reused as they are: every record overwrites all the entries that hold data, and the
        # NaN padding never changes. The returned views are valid until the next record.
        self.steps = []
        return steps, data
