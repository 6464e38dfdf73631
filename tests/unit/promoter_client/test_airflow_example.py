"""The example DAG compiles and calls the promotion client with options it really has (no Airflow needed)."""

from __future__ import annotations

import ast
import inspect

from promoter_client.promotion import request_promotion_async
from tests.paths import REPO

DAG = REPO / "deploy" / "airflow" / "promote_iris.py"


def test_the_dag_uses_the_promotion_client_as_it_is() -> None:
    tree = ast.parse(DAG.read_text(), filename=str(DAG))
    compile(tree, str(DAG), "exec")
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "request_promotion"
    ]
    client_calls = [c for c in calls if c.keywords]
    assert client_calls, "the DAG requests a promotion"
    accepted = set(inspect.signature(request_promotion_async).parameters)
    for call in client_calls:
        assert {k.arg for k in call.keywords} <= accepted
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "promoter_client"]
    assert imports
