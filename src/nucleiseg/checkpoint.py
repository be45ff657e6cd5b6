"""Saving and loading weights (safetensors, no pickle), configs and resumable training state."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .atomic import atomic_path
from .config import PostprocessConfig, TrainConfig, load_config, load_postprocess
from .errors import NucleisegError

if TYPE_CHECKING:  # torch is only needed for the weights; configs and thresholds load without it
    import torch
    from torch import nn

WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
INT8_ONNX = "model.int8.onnx"  # the same network quantised to int8 (nucleiseg export --int8)
CONFIG = "config.json"
THRESHOLDS = "thresholds.json"
STATE = "checkpoint.safetensors"
T = TypeVar("T")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers, so saved keys carry no wrapper prefix."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata or {})


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except FileNotFoundError:
        raise NucleisegError(f"{path}: weights file not found") from None
    except Exception as exc:
        raise NucleisegError(f"{path}: corrupt or unreadable weights file ({exc})") from None


def load_weights_into(model: nn.Module, path: Path) -> dict[str, str]:
    """Load a safetensors file into ``model``; a file of another architecture is a clear error."""
    state, meta = _read_safetensors(path)
    own = unwrap(model).state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong-shape tensors"
                  + (f" (first: {(missing + unexpected + wrong)[0]})" if missing or unexpected or wrong else ""))
        raise NucleisegError(f"{path}: weights do not fit the model configuration: {detail}")
    unwrap(model).load_state_dict(state)
    return meta


def init_weights_from(model: nn.Module, run_dir: str | Path | None) -> Path:
    """Start ``model`` from the weights of a trained model folder (``None`` or ``"default"``: the bundled one).

    Every tensor must match in name and shape, except that the output head may have a different number of
    channels (another target representation): the channels both have are copied, new ones keep their
    initialisation. Anything else (other widths or depth) is a one-line error naming the folder.
    """
    folder = default_model_dir() if run_dir in (None, "default") else Path(run_dir)
    if not (folder / WEIGHTS).is_file():
        raise NucleisegError(f"{folder}: --init needs a model folder holding {WEIGHTS}")
    state, _ = _read_safetensors(folder / WEIGHTS)
    own = unwrap(model).state_dict()
    head = [k for k in own if k.startswith("head.")]
    bad = sorted((set(own) ^ set(state)) | {k for k in own if k in state and k not in head
                                            and state[k].shape != own[k].shape})
    if bad:
        raise NucleisegError(f"{folder}: its network does not fit this configuration (widths, depth or norm "
                             f"differ; first mismatch: {bad[0]}); use --set model.widths=... to match it")
    merged = {}
    for k, v in own.items():
        if k in head and state[k].shape != v.shape:
            v = v.clone()
            n = min(v.shape[0], state[k].shape[0])
            v[:n] = state[k][:n]
            merged[k] = v
        else:
            merged[k] = state[k]
    unwrap(model).load_state_dict(merged)
    return folder


def default_model_dir() -> Path:
    """The model bundled inside the package."""
    return Path(__file__).parent / "models" / "default"


def load_settings(run_dir: str | Path | None = None) -> tuple[Path, TrainConfig, PostprocessConfig]:
    """A model folder (default: the bundled one), its config and its thresholds (defaults without
    thresholds.json); needs no torch."""
    run_dir = default_model_dir() if run_dir is None else Path(run_dir)
    if run_dir.is_file():
        raise NucleisegError(f"{run_dir}: expected a model folder (holding {CONFIG} and {WEIGHTS}), got a file")
    if not run_dir.is_dir():
        raise NucleisegError(f"{run_dir}: model folder not found")
    config = _named(run_dir / CONFIG, load_config, "invalid model config")
    post = PostprocessConfig()
    if (run_dir / THRESHOLDS).exists():
        post = _named(run_dir / THRESHOLDS, load_postprocess, "invalid thresholds")
    return run_dir, config, post


def load_network(run_dir: str | Path | None = None) -> tuple[nn.Module, TrainConfig, PostprocessConfig]:
    """Rebuild the torch network of a model folder from ``config.json`` and its weights, with its config and
    thresholds (``segmenter.load_model`` builds a ready-to-use Segmenter instead)."""
    from .model import UNet

    run_dir, config, post = load_settings(run_dir)
    model = UNet(config.model)
    load_weights_into(model, run_dir / WEIGHTS)
    model.eval()
    return model, config, post


load_model = load_network  # old name, kept until export.py imports load_network; do not use


def _named(path: Path, load: Callable[[Path], T], what: str) -> T:
    """Call ``load(path)``; any validation error becomes a ``NucleisegError`` that names ``path``."""
    try:
        return load(path)
    except NucleisegError as exc:
        if str(exc).startswith(f"{path}:"):
            raise
        raise NucleisegError(f"{path}: {what} ({exc})") from None
    except (TypeError, ValueError, AttributeError) as exc:  # wrong JSON types for a field
        raise NucleisegError(f"{path}: {what} ({exc})") from None


def save_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict) -> None:
    """Model and optimizer tensors plus JSON ``info`` (epoch, step, best score) in one safetensors file."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for name, value in st.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
    meta = {"info": json.dumps(info), "param_groups": json.dumps(opt["param_groups"])}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what ``save_training_state`` wrote; returns its ``info``."""
    tensors, meta = _read_safetensors(path)
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        unwrap(model).load_state_dict(model_state)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        return json.loads(meta["info"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise NucleisegError(f"{path}: checkpoint does not fit this run ({exc})") from None
