"""Shared helpers of the benchmark scripts: shortened copies of the paper's experiments."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from palmc.schema import load_experiment, validate_experiment  # noqa: E402


def fig3abc(epochs: int = 1, seeds: int = 10, every: int = 1000, variables: list[str] | None = None,
            dataset_size: int | None = None, engine: str = "compiled"):
    """The Fig3abc experiment (5-20-10-20-5 PAL, bw_only), with fewer epochs/seeds and a chosen recording."""
    base = load_experiment(ROOT / "experiments" / "fig3abc.yaml").to_dict()
    base["input"]["epochs"] = epochs
    if dataset_size is not None:
        base["input"]["dataset_size"] = dataset_size
    base["seeds"] = base["seeds"][:seeds]
    base["recording"]["every"] = every
    if variables is not None:
        base["recording"]["variables"] = variables
    base.setdefault("compute", {})["engine"] = engine
    return validate_experiment(base, source="benchmark")
