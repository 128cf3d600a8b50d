"""The command line as a user meets it: validate, analyze, and clear errors with status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import palmc
from palmc.cli import app
from tests.experiments import write_experiment

runner = CliRunner()
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli")
    exp = write_experiment(directory, layers=(3, 4, 3, 2), models="  - {kind: FA}\n  - {kind: PAL}", every=5)
    return palmc.simulate(exp, workers=1, engine="numpy", progress=False)


def test_validate_prints_the_plan() -> None:
    result = runner.invoke(app, ["validate", str(ROOT / "experiments" / "quickstart.yaml")])
    assert result.exit_code == 0, result.output
    for text in ("valid", "9 = 3 seeds x 3 models", "steps/run", "variables", "MiB"):
        assert text in result.output


def test_analyze_prints_a_table_and_writes_results(store: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.yaml"
    queries.write_text("queries:\n  final:\n    metric: angle_BPP_WPPT\n    aggregate: last\n    reduce: mean\n")
    out = tmp_path / "final.csv"
    result = runner.invoke(app, ["analyze", str(store), str(queries), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "angle_BPP_WPPT" in result.output and "PAL" in result.output and "FA" in result.output
    assert out.exists() and "PAL" in out.read_text()


def test_analyze_bad_query_lists_what_exists(store: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.yaml"
    queries.write_text("queries:\n  bad:\n    metric: angle_nope\n")
    result = runner.invoke(app, ["analyze", str(store), str(queries)])
    assert result.exit_code == 2
    assert "angle_nope" in result.output and "angle_BPP_WPPT" in result.output
    queries.write_text("queries:\n  bad:\n    metric: angle_BPP_WPPT\n    select: {seed: 99}\n")
    result = runner.invoke(app, ["analyze", str(store), str(queries)])
    assert result.exit_code == 2 and "11" in result.output


def test_missing_store_and_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", str(tmp_path / "nope.zarr")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["simulate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml" in result.output
