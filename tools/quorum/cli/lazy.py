"""Modules imported on first use.

The CLI builds one parser for every verb, so a plain import of each verb's
library would make `quorum --version` (and a no-op build) pay for networkx,
jinja2, python-gnupg and the rest: about a quarter of a second.  A verb
module names its libraries through ``lazy`` instead, and only the verb that
runs imports what it uses.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class lazy(ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_target"] = name
        self.__dict__["_module"] = None

    def __getattr__(self, attr: str):
        mod = self.__dict__["_module"]
        if mod is None:
            mod = importlib.import_module(self.__dict__["_target"])
            self.__dict__["_module"] = mod
        return getattr(mod, attr)
