"""Generate the JSON Schema of every event into ``schemas/jsonschema/`` (``promoter-schemas``).

``promoter-schemas --write`` regenerates the files; ``promoter-schemas --check`` exits 1 when the
committed files differ from the models (a test runs the same check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from schemas.catalog import EVENT_CLASSES
from schemas.envelope import CloudEvent

SCHEMA_DIR = Path(__file__).parent / "jsonschema"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def event_schema(cls: type[CloudEvent]) -> dict[str, Any]:
    schema = cls.model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"{cls.event_type}.json", **schema}


def rendered_schemas() -> dict[str, str]:
    """File name to file content, for every event type."""
    return {
        f"{cls.event_type}.json": json.dumps(event_schema(cls), indent=2, sort_keys=True) + "\n"
        for cls in EVENT_CLASSES
    }


def drifted_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of files that are missing, stale or no longer generated."""
    expected = rendered_schemas()
    present = {path.name for path in directory.glob("*.json")}
    stale = [
        name
        for name, text in expected.items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
    return sorted(stale + sorted(present - expected.keys()))


def write(directory: Path = SCHEMA_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    expected = rendered_schemas()
    for path in directory.glob("*.json"):
        if path.name not in expected:
            path.unlink()
    for name, text in expected.items():
        (directory / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="promoter-schemas", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate schemas/jsonschema/")
    action.add_argument("--check", action="store_true", help="exit 1 if the committed files drifted")
    args = parser.parse_args(argv)
    if args.write:
        write()
        print(f"wrote {len(EVENT_CLASSES)} schemas to {SCHEMA_DIR}")
        return 0
    drifted = drifted_files()
    if drifted:
        print("JSON Schemas out of date: " + ", ".join(drifted) + " (run `make schemas`)", file=sys.stderr)
        return 1
    print("JSON Schemas up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
