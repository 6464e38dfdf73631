"""One module per console page; each has ``render(config)``."""
