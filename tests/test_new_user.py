"""What a new user trips over (issue #21): one test (or a few) per point of the issue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import palmc
from palmc.cli import app
from tests.experiments import write_experiment

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
runner = CliRunner()


# -- 3. the schema tells the truth about FA ---------------------------------------------------------------------

def test_schema_does_not_say_fa_needs_eta_bw_zero() -> None:
    schema = (ROOT / "schemas" / "experiment.schema.json").read_text()
    assert "when eta_bw = 0" not in schema and "keeps FA's random feedback fixed" not in schema
    assert "whatever eta_bw is" in schema
    assert "overrides" not in QUICKSTART.read_text().split("models:")[1]  # no useless FA override


def test_quickstart_fa_is_the_same_with_or_without_an_eta_bw_override(tmp_path: Path) -> None:
    text = QUICKSTART.read_text().replace("epochs: 60", "epochs: 1").replace("seeds: [123, 456, 789]", "seeds: [123]")
    head, _ = text.split("models:")
    tail = "\nseeds: [123]\nrecording:\n  variables: [WPP, BPP, vbas]\n  every: 10\noutput:\n  store: x.zarr\n"
    stores = []
    for name, models in (("plain", "  - kind: FA\n"),
                         ("override", "  - kind: FA\n    overrides: {plasticity: {eta_bw: [0.0, 0.0]}}\n")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(head + "models:\n" + models + tail)
        stores.append(palmc.open(palmc.simulate(path, tmp_path / f"{name}.zarr", engine="numpy", workers=1,
                                                progress=False)))
    plain, override = stores
    for var in ("WPP", "BPP", "vbas"):
        np.testing.assert_array_equal(plain[var].values, override[var].values)
    bpp = plain["BPP"].sel(layer=1).values
    np.testing.assert_array_equal(bpp[0], bpp[-1])  # FA's feedback never moves
