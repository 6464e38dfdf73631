"""Where the tests find the repository's files and the shared fixtures beside it."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the checkout (CI, a developer's clone), or beside the folder of a git worktree.
SHARED = next((p / "shared" for p in REPO.parents if (p / "shared" / "fixtures").is_dir()), REPO.parent / "shared")
WEBHOOK_DELIVERIES = SHARED / "fixtures" / "mlflow-webhooks" / "deliveries.jsonl"
