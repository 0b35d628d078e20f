"""Callable modules, so `rllmsim.compare(...)` and `rllmsim.validate(...)` work.

`rllmsim.compare` and `rllmsim.validate` name subpackages, and importing a subpackage sets the
parent's attribute to the module, replacing any function of that name. Giving those modules a
class with `__call__` keeps both: `from rllmsim.compare import Comparison` works as before, and
calling the module runs the API function, imported only when called.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class CallableModule(types.ModuleType):
    """A module whose call runs the function named by its `__call_target__` ("module:function")."""

    __call_target__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, function = self.__call_target__.partition(":")
        return getattr(importlib.import_module(module), function)(*args, **kwargs)


def make_callable(name: str, target: str) -> None:
    """Make the loaded module `name` call `target` ("package.module:function")."""
    module = sys.modules[name]
    module.__call_target__ = target
    module.__class__ = CallableModule
