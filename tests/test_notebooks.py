"""Every notebook in notebooks/ runs top to bottom without an error, and is committed with its outputs cleared.

Each notebook runs in a fresh ``python3`` kernel whose working directory is notebooks/ (as in Jupyter) and which
imports palmc from this checkout (the repository root is put first on PYTHONPATH). The kernel talks over IPC
sockets in a temporary directory (no TCP, so ipykernel's "running over TCP without encryption" warning does not
appear) and is shut down by the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_exist() -> None:
    names = {nb.name for nb in NOTEBOOKS}
    assert {"quickstart.ipynb", "tiny_network_demo.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    km = jupyter_client.KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "kernel-ipc"))
    client = nbclient.NotebookClient(
        nb, km=km, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute(env=env, cwd=str(path.parent))
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}")
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors}"
