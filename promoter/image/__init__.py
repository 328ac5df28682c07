"""Daemonless assembly of the serving image: reproducible layers, config, manifest, layout.

Nothing here talks to a registry itself; pushing goes through a ``BlobSink`` (the registry
client behind the ``ImageRegistry`` port, or the OCI layout writer in promoter.image.layout).
"""
