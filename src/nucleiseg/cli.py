"""Command-line interface: parses arguments and calls the API; user errors become one-line messages."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value}")
    return value


def _diameter(text: str) -> str | float | None:
    if text == "auto":
        return text
    if text == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a number of pixels, got {text!r}") from None
    if not 2.0 <= value <= 1000.0:
        raise argparse.ArgumentTypeError(f"a nucleus diameter must lie in [2, 1000] px, got {value}")
    return value


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 2/8), got {text!r}") from None
    if not (n >= 1 and 1 <= k <= n):
        raise argparse.ArgumentTypeError(f"need 1 <= K <= N, got {text!r}")
    return k, n


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from .config import override, preset
    from .finetune import finetune, finetune_config
    from .train import train

    # --init without --preset fine-tunes: the starting model's network and targets, a few-image schedule
    fine_tune = bool(args.init) and args.preset is None and not args.resume
    config = finetune_config(args.init) if fine_tune else preset(args.preset or "default")
    config = override(config, args.set or [])
    changes = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                                 ("val_fraction", args.val_fraction), ("seed", args.seed),
                                 ("samples_per_epoch", args.samples_per_epoch)) if v is not None}
    if args.init and not fine_tune:
        changes["init"] = args.init
    config = dataclasses.replace(config, **changes)
    import os

    if fine_tune:
        out = finetune(args.data, args.out, config=config)
    else:
        out = train(args.data, args.out, config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {out / 'model.safetensors'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    shard = args.shard
    summary = predict(args.inputs, args.output, model_dir=args.model, tta=args.tta, rle=args.rle,
                      overlay=args.overlay, measure=args.measure, shard=shard, backend=args.backend,
                      tile=args.tile, diameter=args.diameter, device=args.device,
                      output_format=args.output_format, geojson=args.geojson, dask_scheduler=args.dask_scheduler,
                      precision=args.precision)
    return 1 if summary.failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    evaluate(args.pred, args.truth, out_dir=args.out, report_dir=args.report)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import tune

    tune(args.model, args.data, tta=args.tta)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .errors import NucleisegError
    from .export import export_onnx

    if args.int8 and not args.data:
        raise NucleisegError("export --int8 needs --data DIR: the training images to calibrate on")
    path = export_onnx(args.onnx, args.model)
    print(f"wrote {path}")
    if args.int8:
        from .quantize import quantize_onnx

        print(f"wrote {quantize_onnx(args.data, args.model, images=args.calibration_images)}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .fetch import DEFAULT_BASE_URL, fetch_dsb2018

    dest = fetch_dsb2018(args.dest, base_url=args.base_url or DEFAULT_BASE_URL, parts=[p.strip() for p in args.parts.split(",") if p.strip()],
                         verify=args.verify)
    print(f"DSB2018 data in {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nucleiseg", description="Find every cell nucleus in microscopy images.")
    parser.add_argument("--version", action="version", version=f"nucleiseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a U-Net on a DSB-layout or images/+labels/ folder")
    p.add_argument("--data", required=True, action="append", metavar="DIR[:WEIGHT]",
                   help="training folder (DSB layout or images/ + labels/), repeatable; WEIGHT scales how often "
                        "its images are drawn (default 1: a dataset's share is weight x its image count)")
    p.add_argument("--out", required=True, type=Path, help="run folder for weights, config, history, plots")
    p.add_argument("--preset", help="seed | default | tiny (default: default; with --init and no --preset: "
                                     "fine-tune the --init model with a schedule for a few images)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--samples-per-epoch", type=_positive_int, help="random crops per epoch (native presets)")
    p.add_argument("--lr", type=float)
    p.add_argument("--val-fraction", type=_fraction, help="validation share for data without a committed split")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a preset setting, e.g. augment=false or model.widths=24,48,96,192,384")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--init", metavar="default|RUN_DIR",
                   help="start from the bundled model (default) or a trained model folder: without --preset "
                        "this fine-tunes it (its network and targets, lower learning rate, early stopping, at "
                        "most 9 minutes: --set time_limit=SECONDS); with --preset, that recipe from its weights")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment images into label TIFFs")
    p.add_argument("inputs", nargs="+", type=Path, help="image files, folders of images, or DSB-layout folders")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("--model", type=Path, help="run folder of a trained model (default: the bundled model)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the 8 flips/rotations (default: the model's setting)")
    p.add_argument("--rle", type=Path, help="also write a Kaggle submission CSV")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    p.add_argument("--measure", action="store_true", help="also write <name>_nuclei.csv measurements (Parquet for slides with over 200,000 nuclei)")
    p.add_argument("--shard", type=_shard, help="process only shard K of N of the inputs (K/N)")
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx",
                   help="onnx: the model's model.onnx in onnxruntime (default); torch: PyTorch (nucleiseg[train])")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: a GPU when there is one (default); cuda fails without one")
    p.add_argument("--precision", choices=("auto", "fp32", "int8"), default="auto",
                   help="network precision (onnx backend): auto (default) runs the model's int8 network "
                        "(model.int8.onnx) on the CPU when it has one, fp32 on a GPU; fp32 or int8 force one")
    p.add_argument("--tile", type=_positive_int, default=1024, help="tile size for large images (pixels)")
    p.add_argument("--diameter", type=_diameter, default="auto",
                   help="nucleus diameter in pixels, or auto (default) to estimate it per image; images are "
                        "rescaled so nuclei have the model's canonical size, labels come back at full size; "
                        "none: no rescaling (the image as it is)")
    p.add_argument("--output-format", choices=("tiff", "zarr"), default="tiff",
                   help="tiff: <name>.tif label images (default; images over 64 MP stream into a tiled BigTIFF); "
                        "zarr: <name>.ome.zarr (streamed block by block, nucleiseg[slides])")
    p.add_argument("--geojson", action="store_true", help="also write <name>.geojson outlines (QuPath detections)")
    p.add_argument("--dask-scheduler", metavar="tcp://HOST:PORT",
                   help="run streamed blocks on this dask.distributed cluster (nucleiseg[distributed]); "
                        "its workers must see the input and output folders")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score predicted label images against the truth (DSB2018 metric)")
    p.add_argument("--pred", required=True, type=Path, help="folder of predicted <name>.tif label images")
    p.add_argument("--truth", required=True, type=Path, help="truth folder (DSB layout or images/ + labels/)")
    p.add_argument("--out", type=Path, help="where to write scores.json and per_image.csv (default: --pred)")
    p.add_argument("--report", type=Path, help="write an HTML report into this folder")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tune", help="search post-processing thresholds on validation images")
    p.add_argument("--model", required=True, type=Path, help="run folder; thresholds.json is written there")
    p.add_argument("--data", required=True, type=Path, action="append", metavar="DIR",
                   help="annotated folder (its validation split is used), repeatable: the score is the mean over "
                        "the datasets of each one's mean DSB score")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="tune for predictions with test-time augmentation (saved as the model's default)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("export", help="export a model to ONNX (default: <model folder>/model.onnx)")
    p.add_argument("--onnx", type=Path, help="output .onnx file (default: model.onnx in the model folder)")
    p.add_argument("--model", type=Path, help="run folder (default: the bundled model)")
    p.add_argument("--int8", action="store_true",
                   help="also write <model folder>/model.int8.onnx, quantised to int8 and calibrated on --data")
    p.add_argument("--data", type=Path, action="append", metavar="DIR", default=[],
                   help="with --int8: annotated training folder (its validation split is left out), repeatable")
    p.add_argument("--calibration-images", type=_positive_int, default=32,
                   help="with --int8: how many training images to calibrate on (default: 32)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("fetch", help="download a dataset (dsb2018: BBBC038, the original 670-image release)")
    p.add_argument("dataset", choices=("dsb2018",), help="the dataset to fetch")
    p.add_argument("--dest", type=Path, default=Path("data/dsb2018"),
                   help="folder to unpack into (default: data/dsb2018); finished parts are skipped")
    p.add_argument("--base-url", help="mirror URL (http/https), or a folder (path or file://) of already-downloaded "
                                      "files (default: the BBBC038 page)")
    p.add_argument("--parts", default="stage1_train,stage1_test,stage2_test", metavar="PART[,PART...]",
                   help="comma-separated parts to fetch, of stage1_train, stage1_test (with its labels) and "
                        "stage2_test (with the scored images' labels) (default: all)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="accept a download whose size cannot be checked (the server sends no Content-Length "
                        "and none is recorded); sizes are otherwise checked and SHA-256 logged")
    p.set_defaults(func=cmd_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    from .errors import NucleisegError

    try:
        return args.func(args)
    except NucleisegError as exc:
        print(f"nucleiseg: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # the core install has no torch: train, tune and export need it
        if exc.name not in ("torch", "safetensors", "onnxscript", "onnx"):
            raise
        print(f"nucleiseg: error: {args.command} needs {exc.name}: pip install torch==2.13.0 \"nucleiseg[train]\"",
              file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a full disk or a read-only folder while writing an output
        print(f"nucleiseg: error: {exc.filename or args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nucleiseg: interrupted", file=sys.stderr)
        return 130
