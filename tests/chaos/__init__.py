"""The fault suite: `make chaos` breaks the running system on purpose and measures how it heals."""
