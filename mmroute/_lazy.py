"""PEP 562 lazy attributes for the packages whose public names live in heavy modules.

``__getattr__, __dir__ = lazy_attributes(__name__, {"Name": "pkg.module", ...}, __all__)``: a
name is imported from its module on first access and then cached as a plain module attribute,
so importing the package stays cheap (no torch / litellm until a name is used).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_attributes(package: str, table: Mapping[str, str],
                    public: Sequence[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *public})

    return __getattr__, __dir__
