"""cosign-compatible signing: key files, legacy ``.sig`` signatures and v3 bundle referrers."""
