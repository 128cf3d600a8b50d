"""Generate the files derived from the code: ``schemas/experiment.schema.json`` from the pydantic models, and
the variables table of ``docs/dataset-contract.md`` from the variable declaration (palmc.engine.variables).

Run ``python -m palmc.schema.generate`` after changing either; tests check that the committed files are current.
"""

from __future__ import annotations

import json
from pathlib import Path

from palmc.engine.variables import markdown_table
from palmc.schema.experiment import Experiment

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
TABLE_BEGIN, TABLE_END = "<!-- variables table: begin -->\n", "<!-- variables table: end -->"
ROOT = Path(__file__).resolve().parents[2]


def schema_path() -> Path:
    """Location of the generated schema: ``schemas/experiment.schema.json`` at the repository root."""
    return ROOT / "schemas" / "experiment.schema.json"


def schema_json() -> str:
    """The JSON Schema of an experiment file, as the text written to :func:`schema_path`."""
    schema = {"$schema": JSON_SCHEMA_DIALECT, **Experiment.model_json_schema()}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def contract_path() -> Path:
    """The dataset contract: ``docs/dataset-contract.md`` at the repository root."""
    return ROOT / "docs" / "dataset-contract.md"


def contract_text(current: str) -> str:
    """``current`` (the contract's text) with its variables table replaced by the generated one."""
    if TABLE_BEGIN not in current or TABLE_END not in current:
        raise ValueError(f"{contract_path()}: expected the markers {TABLE_BEGIN.strip()} and {TABLE_END}")
    head, rest = current.split(TABLE_BEGIN, 1)
    return head + TABLE_BEGIN + markdown_table() + TABLE_END + rest.split(TABLE_END, 1)[1]


def main() -> None:
    """Write the schema file and the contract's variables table, and say where."""
    path = schema_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_json(), encoding="utf-8")
    print(f"wrote {path}")
    contract = contract_path()
    contract.write_text(contract_text(contract.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote the variables table of {contract}")


if __name__ == "__main__":
    main()
