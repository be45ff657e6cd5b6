"""nucleiseg: find every cell nucleus in a microscopy image.

The public API is imported lazily so that ``nucleiseg --help`` stays instant; prediction never imports torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_model": "segmenter",
    "segment": "segmenter",
    "Segmenter": "segmenter",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "tune": "tune",
    "export_onnx": "export",
    "fetch_dsb2018": "fetch",
    "measure": "measure",
    "read_image": "io",
    "read_labels": "io",
    "write_labels": "io",
    "score_image": "metrics",
    "dsb_score": "metrics",
    "preset": "config",
    "TrainConfig": "config",
    "ModelConfig": "config",
    "PostprocessConfig": "config",
    "NucleisegError": "errors",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'nucleiseg' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The package module: keeps the API functions named like their modules (``measure``, ``predict``,
    ``train``, ``evaluate``, ``tune``) when those modules get imported. Python sets ``nucleiseg.<module>`` to
    the submodule on import, which would replace ``nucleiseg.measure`` the function by the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _API.get(name) == name:
            return  # the submodule stays reachable through sys.modules / importlib.import_module
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
