"""Where the tests find the repository's files and the shared fixtures beside it."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEBHOOK_DELIVERIES = REPO.parent / "shared" / "fixtures" / "mlflow-webhooks" / "deliveries.jsonl"
