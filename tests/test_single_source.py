"""The model's equations exist once (palmc/engine/equations.py): editing one changes both engines alike.

Each test copies the palmc package to a temporary directory, edits an equation there and runs the copy in a fresh
process (``PYTHONPATH`` on the copy, numba's cache in the temporary directory).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np

import palmc

PACKAGE = Path(palmc.__file__).resolve().parent

# the PAL update with its learning rate doubled (the edit a researcher trying a variant would make)
PAL_RULE = "    return dt_eta_bw * (xi * r_pre) - regularizer\n"
PAL_RULE_DOUBLED = "    return 2.0 * dt_eta_bw * (xi * r_pre) - regularizer\n"

# a small PAL network through the NumPy step and both compiled layouts; prints where palmc came from
ENGINES = """
import sys
import numpy as np
import palmc
from palmc.engine.compiled import driver
from palmc.engine.params import ModelParams, Protocol, RunSpec
from palmc.engine.tasks import Simulation

def simulation():
    params = ModelParams(model="PAL", layers=(3, 4, 3, 2), activations=("logistic",) * 3, eta_fw=(2.0, 1.0, 0.5),
                         eta_bw=(20.0, 15.0), eta_IP=(1.0, 0.8), eta_PI=(5.0, 4.0), alpha=(1e-3, 2e-3),
                         noise_scale=(0.05, 0.04))
    protocol = Protocol(task="bw_only", dataset_size=3, epochs=2, steps_per_presentation=10, settling_steps=20)
    return Simulation([RunSpec(seed, "PAL", params, 11, 11) for seed in (11, 12)], protocol)

final = {}
sim = simulation()
sim.advance(sim.protocol.total_steps)
final["numpy"] = sim.state
for layout in ("neurons", "lanes"):
    sim = simulation()
    driver.advance(sim, sim.protocol.total_steps, layout=layout, specialise=False)
    final[layout] = sim.state
np.savez(sys.argv[1], **{f"{engine}/BPP.{i}": B for engine, state in final.items() for i, B in enumerate(state.BPP)},
         **{f"{engine}/uP.{i}": u for engine, state in final.items() for i, u in enumerate(state.uP)})
print(palmc.__file__)
"""


def _copy_package(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(PACKAGE, root / "palmc", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: expected the line {old!r} once"
    path.write_text(text.replace(old, new))


def _run(code: str, pythonpath: Path, cache: Path | None, *args: str) -> str:
    """Run ``code`` with the palmc of ``pythonpath``, numba's cache in ``cache`` (None: numba's usual place)."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    env.pop("NUMBA_CACHE_DIR", None)
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache)
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=pythonpath, check=True,
                         capture_output=True, text=True, timeout=1200)
    return out.stdout.strip().splitlines()[-1]


def _engines(pythonpath: Path, cache: Path | None, result: Path) -> dict[str, np.ndarray]:
    origin = _run(ENGINES, pythonpath, cache, str(result))
    assert Path(origin).resolve().is_relative_to(pythonpath.resolve())  # the package under test, not another
    with np.load(result) as f:
        return {k: f[k] for k in f.files}


def test_doubling_the_pal_learning_rate_in_equations_changes_both_engines_alike(tmp_path: Path) -> None:
    original = _engines(PACKAGE.parent, None, tmp_path / "original.npz")  # the kernels as the other tests cache them
    copy = _copy_package(tmp_path)
    _edit(copy / "palmc" / "engine" / "equations.py", PAL_RULE, PAL_RULE_DOUBLED)
    edited = _engines(copy, tmp_path / "cache-edited", tmp_path / "edited.npz")

    for engine in ("numpy", "neurons", "lanes"):
        for name in ("BPP.0", "BPP.1", "uP.0"):
            key = f"{engine}/{name}"
            assert not np.allclose(edited[key], original[key], rtol=1e-6, atol=0), f"{key} did not change"
    for engine in ("neurons", "lanes"):  # and the compiled engines still agree with the NumPy step
        for key in (k for k in edited if k.startswith("numpy/")):
            name = key.split("/", 1)[1]
            np.testing.assert_allclose(edited[f"{engine}/{name}"], edited[key], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{engine} {name} after the edit")
            np.testing.assert_allclose(original[f"{engine}/{name}"], original[key], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{engine} {name} before the edit")


# the logistic through the compiled activation (cached on disk like the kernels), and through NumPy
LOGISTIC = """
import numpy as np
from palmc.engine.compiled.activations import ACTIVATION_CODES, phi
from palmc.engine.equations import logistic
print(phi(ACTIVATION_CODES["logistic"], 0.0), float(logistic(np.zeros(1))[0]))
"""


def test_the_compiled_cache_follows_an_edit_of_equations(tmp_path: Path) -> None:
    """numba keys its cache by the source file of the compiled function only; palmc's kernels inline
    equations.py, so an edit there must not leave them running the old equation from the cache."""
    copy, cache = _copy_package(tmp_path), tmp_path / "cache"
    assert _run(LOGISTIC, copy, cache).split() == ["0.5", "0.5"]
    _edit(copy / "palmc" / "engine" / "equations.py", "    return 1.0 / (1.0 + exp_minus_x)\n",
          "    return 2.0 / (1.0 + exp_minus_x)\n")
    assert _run(LOGISTIC, copy, cache).split() == ["1.0", "1.0"]


# conductance ratios, dt * eta, dt * alpha * eta, dt / tau, 1 / tau_xi, sqrt(dt tau_xi): BatchParams' derived constants
DERIVED = re.compile(r"(gbas|gden)\s*/\s*\(|\bdt\s*\*\s*[\w.\[\]]*(eta|alpha)|\b1\s*/\s*[\w.\[\]]*tauxi|sqrt\(\s*dt\s*\*"
                     r"|\bdt\s*/\s*[\w.\[\]]*tau(LO|HP)")


def _code_only(path: Path) -> str:
    """The source of ``path`` without its comments and strings (docstrings say what the constants are)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return " ".join(t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.STRING))


def test_derived_constants_are_computed_once_in_batch_params() -> None:
    """The NumPy step, the noise, the feedback rules and the kernels' tables read BatchParams' derived constants,
    and the query metrics the conductance ratios of equations.py; none of them derives one again."""
    engine = PACKAGE / "engine"
    assert DERIVED.search(_code_only(engine / "state.py"))  # the pattern finds them where they are
    for path in sorted([*engine.rglob("*.py"), *(PACKAGE / "query").rglob("*.py")]):
        if path.name != "state.py":
            match = DERIVED.search(_code_only(path))
            assert match is None, f"{path.relative_to(PACKAGE)} derives {match.group(0)!r} again"
