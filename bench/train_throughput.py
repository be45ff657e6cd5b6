"""Training throughput (images/s) at 256x256 for the default network: fp32 vs bf16 autocast, channels-last.

Run: python bench/train_throughput.py [--steps 6] [--batch 8]
Prints the median seconds per step over ``steps`` timed steps (after 2 warm-up steps) for each variant.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nucleiseg.config import preset
from nucleiseg.losses import segmentation_loss
from nucleiseg.model import UNet


def time_variant(bf16: bool, channels_last: bool, steps: int, batch: int, size: int) -> float:
    torch.manual_seed(0)
    config = preset("default")
    model = UNet(config.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = (torch.rand(batch, config.model.out_channels, size, size) > 0.7).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = segmentation_loss(logits.float(), y, config.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.size}x{args.size}")
    base = None
    for bf16 in (False, True):
        for cl in (False, True):
            s = time_variant(bf16, cl, args.steps, args.batch, args.size)
            base = base or s
            print(f"bf16={bf16!s:5} channels_last={cl!s:5}  {s:.3f} s/step  {args.batch / s:6.1f} img/s  "
                  f"x{base / s:.2f} vs fp32")


if __name__ == "__main__":
    main()
