"""The in-memory world of tests/core/test_pipeline.py, for every pipeline test module."""

from tests.core.test_pipeline import world  # noqa: F401  (a pytest fixture)
