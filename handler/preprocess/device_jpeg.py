"""Plain JPEGs decoded a batch at a time on a GPU worker's device (nvJPEG, through torchvision),
to the pixels Pillow's path gives them (decode.py); every other input takes that path."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from handler.preprocess.decode import FULL_DECODE_PIXELS, WORK_SIDE, decode_pixels
from handler.preprocess.kernels import by_shape, from_levels

logger = logging.getLogger(__name__)


@dataclass
class DeviceJpeg:
    """A JPEG left for decoding with its batch on the worker's device (see device_jpeg)."""

    data: bytes


def pixels_or_device_jpeg(data: bytes) -> np.ndarray | DeviceJpeg:
    """decode_pixels, except that a plain JPEG is left for the device: a GPU worker's decoder."""
    return DeviceJpeg(data) if device_jpeg(data) else decode_pixels(data)


_ORIENTATION = 0x0112  # EXIF tag


def device_jpeg(data: bytes) -> bool:
    """Whether nvJPEG may decode these bytes: a baseline 8-bit grey or YCbCr JPEG, complete (it ends
    with EOI), small enough to decode at full size, not turned by EXIF, whose header Pillow reads. Everything else
    takes Pillow's path, which reads it or says what is wrong with it (the same 4xx as ever); the
    decoders of torchvision's family have crashed the process on broken files (pytorch/vision#3613,
    #6456), so only well-formed ones are handed to one."""
    if not (data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # the header only
            orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # whatever it is, Pillow's path reports it
        return False
    width, height = image.size
    return (
        image.format == "JPEG"
        and image.mode in ("L", "RGB")
        and 0 < width * height <= FULL_DECODE_PIXELS
        and not image.info.get("progressive")
        and not image.info.get("progression")
        and getattr(image, "bits", 8) == 8
        and orientation == 1
    )


def decode_jpegs(jpegs: list[bytes], device: torch.device | str) -> list[torch.Tensor | None]:
    """JPEGs that device_jpeg let through -> (H, W) float32 grayscale on `device` (their luma, as
    Pillow's path reads them), reduced to WORK_SIDE as that path does; all None should the device's
    decoder refuse the batch (the caller then takes Pillow's path for each)."""
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
    try:
        images = decode_jpeg(encoded, mode=ImageReadMode.GRAY, device=device)  # (1, H, W) uint8 each
    except RuntimeError:
        logger.warning("the device's JPEG decoder refused a batch; decoding it with Pillow", exc_info=True)
        return [None] * len(jpegs)
    out: list[torch.Tensor | None] = [None] * len(images)
    for indices in by_shape(images):  # a phone's photos share a size: one call per step for them all
        stack = from_levels(torch.stack([images[i][0] for i in indices]))  # (n, H, W)
        for i, gray in zip(indices, reduced(stack).unbind(0)):
            out[i] = gray
    return out


def reduced(grays: torch.Tensor, side: int = WORK_SIDE) -> torch.Tensor:
    """(N, H, W) -> the same, the longer side at most `side`: antialiased bilinear, rounded to 8
    bits, as Pillow's thumbnail gives it."""
    h, w = grays.shape[1:]
    if max(h, w) <= side:
        return grays
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(grays[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return from_levels(torch.round(small[:, 0].clamp(0, 1) * 255))
