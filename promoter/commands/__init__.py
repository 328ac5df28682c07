"""One module per command group; each defines ``register(app)`` (discovered by promoter.cli)."""
