"""Training: data, loop, validation by DSB score, history, plots, checkpoints and resume, DDP."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .checkpoint import (
    CONFIG,
    STATE,
    WEIGHTS,
    load_training_state,
    save_training_state,
    save_weights,
)
from .config import PostprocessConfig, TrainConfig, load_config, save_config
from .data import DatasetSpec, Item, committed_split, content_fingerprint, dataset_name, list_dataset, load_item_cached, median_diameter, train_val_split
from .errors import NucleisegError
from .history import HISTORY, plot_history, read_history, write_history
from .representations import representation
from .model import UNet
from .training_data import CropDataset, ResizedDataset, epoch_indices

log = logging.getLogger(__name__)

FEW_IMAGES = 5  # a dataset with fewer images (and no committed split) trains on all and validates on them too


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """Constant, cosine, or one-cycle (linear warm-up over 10 %, cosine down to 1 %) schedule."""
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "onecycle":
        warm = max(1, total // 10)
        if step < warm:
            return config.lr * (0.04 + 0.96 * step / warm)
        step, total = step - warm, total - warm
    progress = min(1.0, step / max(1, total))
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def _distributed() -> tuple[int, int]:
    """(rank, world size) when launched by torchrun, else (0, 1); sets up the process group:
    NCCL when training on GPUs, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if _use_cuda() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _use_cuda() -> bool:
    """Train on the GPU when one is present, unless NUCLEISEG_DEVICE=cpu."""
    return torch.cuda.is_available() and os.environ.get("NUCLEISEG_DEVICE", "") != "cpu"


def _device(rank: int) -> torch.device:
    if _use_cuda():
        index = int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _sync_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step every rank holds statistics
    updated by its own batch; rank 0's are the ones saved, and this makes all ranks agree with them.
    """
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _load_pairs(items: list[Item]) -> list[tuple[np.ndarray, np.ndarray]]:
    from tqdm import tqdm

    pairs = []
    for item in tqdm(items, desc="loading", unit="img", leave=False, disable=None):
        image, labels = load_item_cached(item)
        pairs.append((image, labels))
    return pairs


def validation_loss(model: torch.nn.Module, config: TrainConfig, loss_data: torch.utils.data.Dataset) -> float:
    """Mean loss over the fixed validation samples; batches go to the device the model sits on."""
    device = next(model.parameters()).device
    rep = representation(config.targets)
    total = 0.0
    model.eval()
    with torch.inference_mode():
        for x, y in DataLoader(loss_data, batch_size=config.batch_size):
            total += float(rep.loss(model(x.to(device)).float(), y.to(device), config.loss)) * len(x)
    return total / max(1, len(loss_data))


def validate(model: torch.nn.Module, config: TrainConfig, post: PostprocessConfig,
             val_sets: dict[str, list[tuple[np.ndarray, np.ndarray]]], loss_data: torch.utils.data.Dataset) -> dict[str, float]:
    """Validation loss (on the training representation) and, per dataset, DSB score / AP@0.5 at native
    resolution; ``val_dsb`` and ``val_ap50`` are the means over datasets. Batches go to the model's device.

    Models with scale normalisation see each image rescaled by its true median nucleus diameter (from the
    labels), so checkpoint choice does not depend on the diameter estimate.
    """
    from .metrics import score_image
    from .runners import TorchRunner
    from .segmenter import Segmenter

    model.eval()
    rep = representation(config.targets)
    seg = Segmenter(TorchRunner(model, rep.activation), config, post, diameter=None)
    out: dict[str, float] = {"val_loss": validation_loss(model, config, loss_data)}
    for name, pairs in val_sets.items():
        rows = [score_image(labels, seg.with_options(diameter=median_diameter(labels) or None).segment(image))
                for image, labels in pairs]
        out[f"val_dsb_{name}"] = float(np.mean([r["dsb"] for r in rows]))
        out[f"val_ap50_{name}"] = float(np.mean([r["ap50"] for r in rows]))
    out["val_dsb"] = float(np.mean([out[f"val_dsb_{n}"] for n in val_sets]))
    out["val_ap50"] = float(np.mean([out[f"val_ap50_{n}"] for n in val_sets]))
    return out


class _ValCrops(torch.utils.data.Dataset):
    """Deterministic validation samples for the loss: ``n`` crops drawn (with replacement) from the
    validation images, the same every epoch."""

    def __init__(self, data: CropDataset, n: int) -> None:
        self.data, self.n = data, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.data[i]


def _remove_stale_temps(out: Path) -> None:
    """Delete temporary files left in ``out`` by a run killed while writing one of its outputs."""
    for name in (WEIGHTS, STATE, CONFIG, HISTORY, "loss_curve.png"):
        stem, suffix = name.rsplit(".", 1)
        for tmp in out.glob(f".{stem}.*.{suffix}"):  # atomic_path's naming: .<stem>.<random><suffix>
            log.debug("removing stale temporary file %s", tmp)
            tmp.unlink(missing_ok=True)


def _datasets(config: TrainConfig, train_sets: list["_LoadedSet"], val_pairs: list) -> tuple[Dataset, Dataset]:
    """Training samples and the fixed validation samples that the validation loss is computed on."""
    train_pairs = [pair for s in train_sets for pair in s.train]
    if config.input_mode == "resize":
        return ResizedDataset(train_pairs, config), ResizedDataset(val_pairs, config)
    # each image of a dataset is drawn with its dataset's weight, so a dataset's share of the samples is
    # weight x its number of training images
    probabilities = np.concatenate([np.full(len(s.train), s.weight) for s in train_sets])
    diameters = [median_diameter(lab) for _, lab in train_pairs]
    train_data = CropDataset(train_pairs, config, config.samples_per_epoch or len(train_pairs), probabilities, diameters)
    val_config = dataclasses.replace(config, augment=False)
    val_crops = CropDataset(val_pairs, val_config, len(val_pairs), diameters=[median_diameter(lab) for _, lab in val_pairs])
    return train_data, _ValCrops(val_crops, len(val_pairs))


@dataclasses.dataclass
class _LoadedSet:
    """One training dataset, decoded and split."""

    name: str
    weight: float
    train: list[tuple[np.ndarray, np.ndarray]]
    val: list[tuple[np.ndarray, np.ndarray]]
    record: dict


def _load_sets(specs: list[DatasetSpec], config: TrainConfig, rank: int) -> list[_LoadedSet]:
    sets = []
    for spec in specs:
        items = list_dataset(spec.path)
        name = dataset_name(spec.path, items)
        if any(s.name == name for s in sets):
            raise NucleisegError(f"{spec.path}: dataset {name!r} given twice")
        few = len(items) < FEW_IMAGES and committed_split(items) is None
        if few:  # too few to hold any back: train on all, and say that validation scores the training images
            train_items, val_items = items, items
            if rank == 0:
                log.warning("%s: only %d images: training on all of them; its validation score is on the "
                            "training images", name, len(items))
        else:
            train_items, val_items = train_val_split(items, config.val_fraction, config.seed)
        if rank == 0 and not few:
            log.info("%s: %d training and %d validation images (weight %g)", name, len(train_items),
                     len(val_items), spec.weight)
        record = {"name": name, "path": str(spec.path), "weight": spec.weight, "train_images": len(train_items),
                  "val_images": 0 if few else len(val_items), "sha256": content_fingerprint(items)}
        if few:
            record["validated_on_training_images"] = True
        sets.append(_LoadedSet(name, spec.weight, _load_pairs(train_items), _load_pairs(val_items), record))
    return sets


def _train_epoch(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batches, config: TrainConfig,
                 device: torch.device, first_step: int, total_steps: int) -> tuple[float, int, float]:
    """One pass over ``batches``; returns (summed loss, samples seen, last learning rate)."""
    net.train()
    rep = representation(config.targets)
    running, seen, lr = 0.0, 0, config.lr
    for i, (x, y) in enumerate(batches):
        lr = learning_rate(config, first_step + i, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            logits = net(x)
        loss = rep.loss(logits.float(), y, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += float(loss.detach()) * len(x)
        seen += len(x)
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{running / seen:.4f}")
    return running, seen, lr


def _validate_and_save(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
                       post: PostprocessConfig, val_sets: dict, val_loss_data: Dataset, history: list[dict],
                       out: Path, epoch: int, train_loss: float, lr: float, images_per_s: float, t0: float) -> None:
    """Validate after ``epoch``, append its history row, keep the weights when the DSB score is the best so
    far, and write history, plot and training state (rank 0 only)."""
    metrics = validate(model, config, post, val_sets, val_loss_data)
    best = max((float(row["val_dsb"]) for row in history), default=-1.0)  # rows read back on resume are text
    row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6),
           "val_loss": round(metrics["val_loss"], 6), "val_dsb": round(metrics["val_dsb"], 5),
           "val_ap50": round(metrics["val_ap50"], 5), "lr": f"{lr:.3g}",
           "train_images_per_s": round(images_per_s, 2), "seconds": round(time.perf_counter() - t0, 1)}
    if len(val_sets) > 1:
        row.update({k: round(v, 5) for k, v in metrics.items() if k.startswith("val_dsb_")})
    history.append(row)
    improved = row["val_dsb"] > best
    if improved:
        best = row["val_dsb"]
        save_weights(model, out / WEIGHTS, {"epoch": str(epoch + 1), "val_dsb": f"{best:.5f}"})
    write_history(history, out / HISTORY)
    plot_history(history, out / "loss_curve.png")
    # the training state is written last: it marks the epoch done, so a run killed before it redoes the
    # epoch on --resume (history is cut back to the state's epoch) and never skips a history row
    save_training_state(out / STATE, model, optimizer, {"epoch": epoch + 1, "best": best})
    per_set = "".join(f"  {k[8:]} {v:.4f}" for k, v in row.items() if k.startswith("val_dsb_"))
    log.info("epoch %d/%d  train loss %.4f  val loss %.4f  val DSB %.4f  AP@0.5 %.4f%s  %.1f img/s  %.0fs%s",
             epoch + 1, config.epochs, row["train_loss"], row["val_loss"], row["val_dsb"], row["val_ap50"],
             per_set, row["train_images_per_s"], row["seconds"], "  (best)" if improved else "")


def _stale_validations(history: list[dict]) -> int:
    """Validations since the one with the best DSB score (0 when the last one is the best)."""
    if not history:
        return 0
    scores = [float(row["val_dsb"]) for row in history]
    return len(scores) - 1 - int(np.argmax(scores))


def _agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank."""
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def train(data: str | Path | DatasetSpec | list, out_dir: str | Path, config: TrainConfig, resume: bool = False,
          max_epochs_this_run: int | None = None) -> Path:
    """Train a model on one or more DSB- or plain-layout folders into ``out_dir``; returns ``out_dir``.

    ``data`` is a folder, a ``DatasetSpec`` (folder + sampling weight, also parsed from ``"DIR:WEIGHT"``) or a
    list of them. Each dataset is split by its committed validation list (``splits/<name>_val.txt``) or at
    random; the checkpoint kept is the one with the best mean validation DSB score over the datasets.
    ``out_dir`` ends up with model.safetensors (best validation DSB score), config.json, history.csv,
    loss_curve.png and checkpoint.safetensors (for ``resume``). Under torchrun the batches are split across
    ranks with DistributedDataParallel (gloo), each rank draws its share of every epoch's samples, and only
    rank 0 validates, logs and writes.
    """
    import torch.distributed as dist

    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world = _distributed()
    try:
        specs = [d if isinstance(d, DatasetSpec) else DatasetSpec.parse(d)
                 for d in (data if isinstance(data, (list, tuple)) else [data])]
        out = _train(specs, Path(out_dir), config, resume, max_epochs_this_run, rank, world)
        if world > 1:
            # rank 0 validates and writes after the last step; tearing the group down while it still works
            # aborts the other ranks' gloo connections ("terminate called without an active exception")
            dist.barrier()
        return out
    finally:
        if world > 1 and owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(specs: list[DatasetSpec], out: Path, config: TrainConfig, resume: bool, max_epochs_this_run: int | None,
           rank: int, world: int) -> Path:
    """``train`` for one rank of ``world``."""
    if resume:
        if not (out / STATE).exists():
            raise NucleisegError(f"{out}: nothing to resume (no {STATE})")
        config = load_config(out / CONFIG)
    else:  # every rank checks, so a refused run stops them all
        if (out / STATE).exists():
            raise NucleisegError(f"{out}: already holds a training run; use --resume or another --out")
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _remove_stale_temps(out)
    torch.manual_seed(config.seed)
    sets = _load_sets(specs, config, rank)
    if not resume:
        config = dataclasses.replace(config, datasets=tuple(s.record for s in sets))
    train_pairs = [pair for s in sets for pair in s.train]
    val_pairs = [pair for s in sets for pair in s.val]
    val_sets = {s.name: s.val for s in sets}
    train_data, val_loss_data = _datasets(config, sets, val_pairs)
    model = UNet(config.model)
    if config.init and not resume:
        from .checkpoint import init_weights_from

        init_weights_from(model, config.init)
        if rank == 0:
            log.info("starting from the weights of %s", config.init)
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start_epoch, best = 0, -1.0
    history: list[dict] = []
    if resume:
        info = load_training_state(out / STATE, model, optimizer)
        start_epoch, best = int(info["epoch"]), float(info["best"])
        history = read_history(out / HISTORY)[:start_epoch]
        if rank == 0:
            log.info("resuming %s at epoch %d", out, start_epoch + 1)
    elif rank == 0:
        save_config(config, out / CONFIG)
    device = _device(rank)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if resume:  # optimizer state loaded on the CPU follows the parameters to their device
        optimizer.load_state_dict(optimizer.state_dict())
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    steps_per_epoch = max(1, len(epoch_indices(config, len(train_pairs), 0, rank, world)) // config.batch_size)
    total = steps_per_epoch * config.epochs
    post = PostprocessConfig()
    workers = int(os.environ.get("NUCLEISEG_WORKERS", "1" if config.input_mode == "native" else "0"))
    last_epoch = config.epochs if max_epochs_this_run is None else min(config.epochs, start_epoch + max_epochs_this_run)
    from tqdm import tqdm

    run_start, epoch_seconds = time.perf_counter(), 0.0
    for epoch in range(start_epoch, last_epoch):
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout noise per epoch: resume-exact
        indices = epoch_indices(config, len(train_pairs), epoch, rank, world)
        loader = DataLoader(Subset(train_data, indices), batch_size=config.batch_size, drop_last=True,
                            num_workers=workers)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
                   disable=None if rank == 0 else True)
        running, seen, lr = _train_epoch(net, optimizer, bar, config, device, epoch * steps_per_epoch, total)
        train_seconds = time.perf_counter() - t0
        if world > 1:
            _sync_buffers(model)
        # another epoch as long as the longest so far would end past the time limit: stop after this one
        epoch_seconds = max(epoch_seconds, train_seconds)
        out_of_time = bool(config.time_limit) and time.perf_counter() - run_start + epoch_seconds > config.time_limit
        if rank == 0 and (out_of_time or not (epoch + 1) % config.val_every or epoch + 1 == last_epoch):
            _validate_and_save(model, optimizer, config, post, val_sets, val_loss_data, history, out, epoch,
                               running / max(seen, 1), lr, seen * world / train_seconds, t0)
            epoch_seconds = max(epoch_seconds, time.perf_counter() - t0)
            best = max(best, float(history[-1]["val_dsb"]))
        elif rank == 0:  # no validation this epoch: still say how far the run is
            log.info("epoch %d/%d  train loss %.4f  %.1f img/s  %.0fs  (validated every %d epochs)", epoch + 1,
                     last_epoch, running / max(seen, 1), seen * world / train_seconds, train_seconds, config.val_every)
        stale = _stale_validations(history)
        stop = out_of_time or (config.patience > 0 and stale >= config.patience)
        if world > 1:
            stop = _agree(stop, device)
        if stop and epoch + 1 < last_epoch:
            if rank == 0:
                log.info("stopping after epoch %d: %s", epoch + 1, "time limit" if out_of_time else
                         f"no better validation DSB score for {stale} validations")
            break
    if rank == 0:
        on_train = any(s.record.get("validated_on_training_images") for s in sets)
        log.info("best checkpoint: %s (val DSB %.4f%s)", out / WEIGHTS, best,
                 ", scored on the training images" if on_train else "")
    return out
