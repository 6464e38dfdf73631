from __future__ import annotations

import json
from pathlib import Path

from schemas.catalog import EVENT_CLASSES
from schemas.export import SCHEMA_DIR, drifted_files, main, write


def test_committed_json_schemas_match_the_models() -> None:
    assert drifted_files() == [], "event models changed: run `make schemas` and commit the result"


def test_check_detects_an_edited_schema(tmp_path: Path) -> None:
    write(tmp_path)
    assert drifted_files(tmp_path) == []
    victim = tmp_path / f"{EVENT_CLASSES[0].event_type}.json"
    victim.write_text(victim.read_text().replace('"maxLength": 256', '"maxLength": 300'))
    (tmp_path / "io.modelpromoter.removed.v1.json").write_text("{}")

    assert drifted_files(tmp_path) == [victim.name, "io.modelpromoter.removed.v1.json"]


def test_schemas_describe_the_envelope_and_the_field_rules() -> None:
    schema = json.loads((SCHEMA_DIR / "io.modelpromoter.promotion.requested.v1.json").read_text())

    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) >= {"source", "data"}
    assert schema["properties"]["type"]["const"] == "io.modelpromoter.promotion.requested.v1"
    data = schema["$defs"]["PromotionRequestedData"]["properties"]
    assert data["version"]["anyOf"][0]["minimum"] == 1


def test_cli_check_passes_on_the_committed_files() -> None:
    assert main(["--check"]) == 0
