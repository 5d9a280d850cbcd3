"""quorum: build a tree of package definitions into deterministic OCI
artifacts, reproduce them independently, and accept them only when enough
distinct people signed the same hash manifest."""

# Bumped whenever a change in quorum itself could change an artifact's bytes
# (the normaliser, the templates, the layout writer).  It is part of every
# input hash, so an upgrade of quorum rebuilds instead of trusting artifacts
# produced by older code.
FORMAT_VERSION = 2

__version__ = "0.1.0"
