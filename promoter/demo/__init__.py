"""`promoter demo`: the whole loop on one machine with embedded defaults."""
