"""Generate ``schemas/experiment.schema.json`` from the pydantic models.

Run ``python -m palmc.schema.generate`` after changing the schema; a test checks that the committed file is current.
"""

from __future__ import annotations

import json
from pathlib import Path

from palmc.schema.experiment import Experiment

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_path() -> Path:
    """Location of the generated schema: ``schemas/experiment.schema.json`` at the repository root."""
    return Path(__file__).resolve().parents[2] / "schemas" / "experiment.schema.json"


def schema_json() -> str:
    """The JSON Schema of an experiment file, as the text written to :func:`schema_path`."""
    schema = {"$schema": JSON_SCHEMA_DIALECT, **Experiment.model_json_schema()}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    """Write the schema file and say where."""
    path = schema_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_json(), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
