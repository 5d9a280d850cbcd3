"""Compatibility: the names quorum's modules and tests imported from here
before engines/ existed.  The code lives in engines/ (the interface) and
engines/docker.py (docker-py); nothing is defined here."""
from __future__ import annotations

from .engines import BuildOptions, Cancelled, EngineFacts
from .engines.docker import (DEFAULT_ENDPOINT, HOW_TO_START, OWNER_LABEL, DockerEngine, new_owner,
                             owner_alive)

# `Engine(url)` is the docker-py engine, as it always was.
Engine = DockerEngine

__all__ = ["BuildOptions", "Cancelled", "DEFAULT_ENDPOINT", "DockerEngine", "Engine", "EngineFacts", "HOW_TO_START",
           "OWNER_LABEL", "new_owner", "owner_alive"]
