"""The models the widgets offer: the bundled one, folders the user picked, and fine-tuned results."""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal

BUNDLED = "bundled model"


class ModelList:
    """Model folders known in this session; ``added`` fires with each new folder."""

    added = Signal(str)

    def __init__(self) -> None:
        self.folders: list[str] = []

    def add(self, folder: str | Path) -> str:
        folder = str(Path(folder).resolve())
        if folder not in self.folders:
            self.folders.append(folder)
        self.added.emit(folder)
        return folder

    def choices(self, _widget: object = None) -> list[tuple[str, str]]:
        """(label, value) pairs for a ComboBox: the bundled model, then the folders (newest first)."""
        return [(BUNDLED, BUNDLED)] + [(f"{Path(f).name}  ({f})", f) for f in reversed(self.folders)]


MODELS = ModelList()


def model_dir(value: str) -> str | None:
    """The folder to load for a ComboBox value (None: the bundled model)."""
    return None if value == BUNDLED else value
