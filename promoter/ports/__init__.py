"""Ports: the Protocols the core's use cases are written against (one module per concern).

Adapters in promoter.adapters implement them; tests may substitute real lightweight peers.
"""
