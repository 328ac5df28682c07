"""The pure core: no network, subprocess, clock or environment reads (checked by import-linter)."""
