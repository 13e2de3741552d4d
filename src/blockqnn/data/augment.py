"""Per-batch data augmentation on the training device: random crop, horizontal flip, cutout.

Owns: `augment`, `cutout` and the default settings per dataset. Must not loop over images in
Python or synchronise with the host: one gather kernel crops and flips the whole batch, so on a
GPU it costs microseconds per batch and needs no DataLoader workers (airbench's approach).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BUILTIN_32X32 = ("cifar10", "cifar100")


def default_augmentation(
    name: str, input_shape: tuple[int, int, int] | None = None
) -> tuple[int, bool]:
    """(pad, flip) for a dataset: digits (0, False): shifted or mirrored digits change meaning
    and 8x8 leaves no room; 32x32 sets (4, True), the standard CIFAR recipe (paper); other
    sizes (max(1, H // 8), True), the same 1/8 of the side. Without `input_shape` a folder or
    .npz set is assumed to be 32x32; pass `data.input_shape` to get the rule for its size."""
    if name == "digits":
        return (0, False)
    if name in BUILTIN_32X32 or input_shape is None:
        return (4, True)
    h = input_shape[1]
    if (h, input_shape[2]) == (32, 32):
        return (4, True)
    return (max(1, h // 8), True)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Map coordinates outside [0, n) back inside by mirroring at the edges (edge pixel not
    repeated, like `F.pad(mode="reflect")`); works for any pad, even pad >= n."""
    import torch

    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i > n - 1, period - i, i)


def augment(
    x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly crop and flip a batch x (B, C, H, W) of any dtype; same shape, dtype, device
    and memory format.

    Crop: each image is shifted by a random offset in [-pad, pad] on each axis, the pixels that
    enter at the border being the image's own mirror image (reflect padding, as airbench does:
    it invents no black borders that the network would learn to ignore). Flip: each image is
    mirrored left-right with probability 1/2. Random numbers are drawn on `generator`'s device
    (default: the global generator of x's device), so a seeded CPU generator gives the same
    augmentation for data on any device. Returns x itself when pad == 0 and not flip.
    """
    import torch

    if pad < 0:
        raise ValueError(f"pad = {pad}: must be >= 0")
    if pad == 0 and not flip:
        return x
    b, c, h, w = x.shape
    rng_device = generator.device if generator is not None else x.device
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=rng_device)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=rng_device)
    if flip:
        mirror = torch.randint(0, 2, (b, 1), generator=generator, device=rng_device).bool()
    dy, dx = dy.to(x.device) - pad, dx.to(x.device) - pad
    rows = _reflect(dy + torch.arange(h, device=x.device), h)  # (B, H): source row of each row
    cols_in = torch.arange(w, device=x.device).expand(b, w)
    if flip:
        cols_in = torch.where(mirror.to(x.device), w - 1 - cols_in, cols_in)
    cols = _reflect(dx + cols_in, w)  # (B, W)
    index = (rows.unsqueeze(2) * w + cols.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
    out = x.flatten(2).gather(2, index).view(b, c, h, w)
    if (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    ):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def cutout(x: torch.Tensor, size: int, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Set a random size x size square of each image to `fill`; the square's centre is
    uniform over the image, so squares are clipped at the border (DeVries & Taylor, 2017)."""
    import torch

    b, _, h, w = x.shape
    y0 = torch.randint(0, h, (b, 1, 1), generator=gen, device=gen.device).to(x.device)
    x0 = torch.randint(0, w, (b, 1, 1), generator=gen, device=gen.device).to(x.device)
    y0, x0 = y0 - size // 2, x0 - size // 2  # top-left corner
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)  # (B, H, W)
    return torch.where(inside.unsqueeze(1), fill, x)
