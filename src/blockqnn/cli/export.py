"""Export a trained model for deployment (TorchScript or ONNX), checked against PyTorch.

Example: blockqnn export runs/final/model.pt --format onnx --out model.onnx

The exported model takes float images in [0, 1] of shape (B, C, H, W), normalises them
itself, and returns class logits; the batch dimension is dynamic.
"""

from __future__ import annotations

import argparse
import json
import sys

from blockqnn.cli.args import PATH


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blockqnn.settings.choices import EXPORT_FORMATS
    from blockqnn.settings.threads import HELP as THREADS_HELP

    parser.add_argument(
        "checkpoint", type=PATH, metavar="CHECKPOINT", help="model file from blockqnn train"
    )
    parser.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    parser.add_argument(
        "--out", type=PATH, required=True, metavar="FILE", help="where to write the export"
    )
    parser.add_argument("--threads", help=THREADS_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from blockqnn.final.model_io import export_model, load_model
    from blockqnn.train import threads

    threads.choose(args.threads)
    threads.configure_threads()  # tracing and the check against PyTorch run the network
    model = load_model(args.checkpoint)
    info = export_model(model, args.format, args.out)
    info["block"] = str(model.block)
    info["input_shape"] = list(model.network.config.input_shape)
    if args.json:
        json.dump(info, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(
            f"wrote {info['path']} ({args.format}); max |diff| vs PyTorch "
            f"{info['max_abs_diff']:.2e} ({info['checked_with']})"
        )
    return 0
