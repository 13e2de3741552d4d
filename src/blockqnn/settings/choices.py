"""The allowed values of string settings, each list in one place.

Owns: the choice lists that more than one module checks or offers (the config, the training
recipes, the final training and the CLI's `choices=`). Must import nothing: the CLI reads it
while it builds its parser.
"""

from __future__ import annotations

PRECISIONS = ("auto", "bf16", "fp32")  # "auto": bf16 where it is fast, else fp32
AUGMENTS = ("auto", "crop_flip", "none")  # "auto": crop + flip for images, none for digits
COMPILE_MODES = ("auto", "on", "off")
TEMPLATES = ("cifar", "imagenet")  # how blocks are stacked: CIFAR stages or an ImageNet stem
HEADS = ("paper", "gap")  # the network's classifier: the paper's FC head or global pooling
FINAL_SCHEDULES = ("multistep", "cosine")  # the final training's lr schedules
TTA_MODES = ("auto", "flip", "none")  # test-time augmentation of the final test accuracy
# where latency is measured: PyTorch on the CPU or the GPU, or ONNX Runtime on the CPU
LATENCY_RUNTIMES = ("cpu", "cuda", "onnxruntime")
LATENCY_PLACES = ("worker", "master")  # who measures: each evaluating worker, or the search
EXPORT_FORMATS = ("torchscript", "onnx")  # what `blockqnn export` writes
# nb201: training epochs whose table accuracy rewards a cell (12: the proxy, 200: the final)
FIDELITIES = (12, 200)


def either(choices: tuple[str, ...]) -> str:
    """'a, b or c': the choices as a message lists them."""
    return " or ".join(filter(None, (", ".join(choices[:-1]), choices[-1])))
