"""Fixtures for the pipeline's end-to-end tests: the shared stack (tests/fixtures/stack.py)."""

from __future__ import annotations

from tests.fixtures.stack import cosign_keys, stack_registry  # noqa: F401  (pytest fixtures)
