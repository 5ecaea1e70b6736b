"""A TorchServe batch of requests -> the network's input, request by request: one bad request never
spoils the others."""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from handler.errors import BadRequest, InputError, InternalError, RequestError
from handler.preprocess import mnistify
from handler.preprocess.decode import DeviceJpeg, decode_gray, decode_jpegs, decode_pixels, pixels_or_device_jpeg
from handler.preprocess.envelopes import request_grays
from handler.preprocess.kernels import divide

logger = logging.getLogger(__name__)


@dataclass
class RequestBatch:
    """A TorchServe batch decoded request by request: one bad request never spoils the others."""

    # Per image of all requests, in order: its (28, 28) readings (mnistify) on the worker's device,
    # the first the primary one.
    images: list[list[torch.Tensor]] = field(default_factory=list)
    outcomes: list[slice | RequestError] = field(default_factory=list)  # per request: its images, or why none
    instances: list[bool] = field(default_factory=list)  # per request: answer {"predictions": [...]}

    def add(self, images: list[list[torch.Tensor]], instances: bool) -> None:
        self.outcomes.append(slice(len(self.images), len(self.images) + len(images)))
        self.images.extend(images)
        self.instances.append(instances)

    def reject(self, error: RequestError) -> None:
        self.outcomes.append(error)
        self.instances.append(False)


def decode_batch(requests: list[dict], device: torch.device | str = "cpu", jpeg_on_device: bool | None = None,
                 gpu_min_pixels: int = mnistify.GPU_MIN_PIXELS) -> RequestBatch:
    """Decode each request on its own (one bad request never spoils the others), then bring all
    the batch's images to MNIST form together on `device`: each call is paid once per batch.
    Plain JPEGs are decoded together on the device when `jpeg_on_device` (default: on CUDA;
    Pillow's reduced-size JPEG decoding costs less on the CPU); images under `gpu_min_pixels` are
    preprocessed on the CPU even then (mnistify.GPU_MIN_PIXELS).

    Only parsing and decoding failures are the client's (4xx). Past decoding the input is a
    readable image, so an exception there is a bug of ours: that request gets an InternalError
    (500), and the rest of the batch is still answered.
    """
    decode = _decoder(device, jpeg_on_device)
    decoded: list[tuple[range, bool] | InputError] = []  # per request: its images' indices, or why none
    grays: list[np.ndarray | DeviceJpeg] = []
    for request in requests:
        try:
            images, instances = request_grays(request, decode)
        except InputError as error:
            decoded.append(error)
            continue
        except Exception as error:  # decoders can raise anything on hostile bytes
            decoded.append(_unreadable(error))
            continue
        decoded.append((range(len(grays), len(grays) + len(images)), instances))
        grays.extend(images)
    pixels = _decoded_on_device(grays, device)  # per image: (H, W) pixels, or the client's error
    readable = iter(zip(*_mnist_like_isolated([p for p in pixels if not isinstance(p, InputError)], device,
                                               gpu_min_pixels)))
    images, errors = [], []
    for p in pixels:
        image_readings, error = (None, p) if isinstance(p, InputError) else next(readable)
        images.append(image_readings)
        errors.append(error)
    batch = RequestBatch()
    for entry in decoded:
        if isinstance(entry, InputError):
            batch.reject(entry)
            continue
        indices, instances = entry
        error = next((errors[i] for i in indices if errors[i] is not None), None)
        if error is None:
            batch.add([images[i] for i in indices], instances)
        else:
            batch.reject(error)
    return batch


def _decoder(device, jpeg_on_device: bool | None):
    """How image bytes are read: on a GPU worker (or when told) plain JPEGs wait, to be decoded
    together on the device (decode.device_jpeg, _decoded_on_device)."""
    if jpeg_on_device is None:
        jpeg_on_device = torch.device(device).type == "cuda"
    return pixels_or_device_jpeg if jpeg_on_device else decode_pixels


def _decoded_on_device(grays: list[np.ndarray | DeviceJpeg], device) -> list[np.ndarray | torch.Tensor | InputError]:
    """The JPEGs left for the device decoded there in one call; should its decoder refuse them,
    each takes Pillow's road, whose error (the client's 4xx) then stands in for the image."""
    waiting = [i for i, gray in enumerate(grays) if isinstance(gray, DeviceJpeg)]
    if not waiting:
        return grays
    out: list = list(grays)
    for i, pixels in zip(waiting, decode_jpegs([grays[i].data for i in waiting], device)):
        if pixels is None:
            try:
                pixels = decode_gray(grays[i].data)
            except InputError as error:
                pixels = error
            except Exception as error:  # decoders can raise anything on hostile bytes
                pixels = _unreadable(error)
        out[i] = pixels
    return out


def _mnist_like_isolated(grays: list[np.ndarray], device, gpu_min_pixels: int
                         ) -> tuple[list, list[RequestError | None]]:
    """mnist_like_many, falling back to one image at a time should the batch raise: only the
    images that raise alone get an InternalError."""
    try:
        return mnistify.mnist_like_many(grays, device=device, gpu_min_pixels=gpu_min_pixels)
    except Exception:
        logger.exception("batched preprocessing failed; retrying image by image")
    readings, errors = [], []
    for gray in grays:
        try:
            (image_readings,), (error,) = mnistify.mnist_like_many([gray], device=device,
                                                                   gpu_min_pixels=gpu_min_pixels)
        except Exception:
            logger.exception("preprocessing failed on a decoded %s image", "x".join(map(str, gray.shape)))
            image_readings, error = None, InternalError()
        readings.append(image_readings)
        errors.append(error)
    return readings, errors


def _unreadable(error: Exception) -> BadRequest:
    """A decoder raised something other than our typed errors on the client's bytes."""
    logger.warning("unreadable input", exc_info=error)
    return BadRequest("unreadable", f"the input could not be read ({type(error).__name__})")


def to_batch(readings: list[list[torch.Tensor]]) -> tuple[torch.Tensor, list[int]]:
    """Per image its (28, 28) readings in [0, 1] -> (K, 1, 28, 28) network input, on the readings'
    device, holding every reading of every image in order (the network normalizes it), and how
    many each image has."""
    counts = [len(r) for r in readings]
    return torch.stack([x for r in readings for x in r])[:, None], counts


def surest_readings(probabilities: torch.Tensor, counts: list[int]) -> list[int] | slice:
    """(K, 10) probabilities of all readings -> per image, the index of the reading the network is
    surest of (mnistify explains why an image can have several)."""
    if len(probabilities) == len(counts):  # one reading each: MNIST-shaped uploads
        return slice(None)
    confidence = probabilities.max(1).values.tolist()
    best, start = [], 0
    for count in counts:
        best.append(max(range(start, start + count), key=confidence.__getitem__))
        start += count
    return best


def _rotation(degrees: float) -> list[list[float]]:
    a = math.radians(degrees)
    return [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]


# The second look: below the handler's low-confidence line (its LowConfidencePredictions metric),
# the reading is also read turned by the card's training rotation, either way.
SECOND_LOOK_BELOW, SECOND_LOOK_DEGREES = 0.6, 10.0
_TURNS = torch.tensor([_rotation(SECOND_LOOK_DEGREES), _rotation(-SECOND_LOOK_DEGREES)])


@functools.lru_cache(maxsize=8)
def _turn_grids(device: torch.device) -> torch.Tensor:
    """(2, 28, 28, 2) sampling grids of the two turns, made once per device: on the CPU, making
    them for every batch with an unsure answer cost about 0.1 ms of its second look."""
    return F.affine_grid(_TURNS.to(device), [2, 1, 28, 28], align_corners=False)


def second_look(model: torch.nn.Module, images: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) chosen readings and their (N, 10) probabilities -> (N, 10), where the answers
    under SECOND_LOOK_BELOW are the mean over the reading and the reading turned by
    +-SECOND_LOOK_DEGREES: three views of a digit the network is unsure of, where one was all it
    had. Two more forward passes for the few unsure images; what it buys per input family is in
    reports/evaluation.md ("one look")."""
    # One read of the confidences, the checks in Python: fewer calls than a mask and its nonzero,
    # for the usual batch where nobody is unsure.
    unsure_rows = [i for i, surest in enumerate(probabilities.amax(1).tolist()) if surest < SECOND_LOOK_BELOW]
    if not unsure_rows:
        return probabilities
    unsure = torch.tensor(unsure_rows, device=images.device)
    x = images[unsure].repeat(2, 1, 1, 1)  # (2n, 1, 28, 28): every image once per turn
    grid = _turn_grids(images.device).repeat_interleave(len(unsure), 0)  # (2n, 28, 28, 2), as x
    turned = torch.softmax(model(F.grid_sample(x, grid, align_corners=False)), dim=1)  # (2n, 10)
    probabilities = probabilities.clone()
    probabilities[unsure] = divide(probabilities[unsure] + turned.view(2, len(unsure), 10).sum(0), 3)
    return probabilities


def read_digits(model: torch.nn.Module, readings: list[list[torch.Tensor]], device="cpu",
                look_again: bool = True) -> torch.Tensor:
    """(N, 10) probabilities, on the CPU, of N images given as their readings: one forward pass,
    the surest reading of each, and a second look at the unsure ones (`look_again=False`: none,
    for the evaluation's comparison). The handler and the evaluation both read digits this way."""
    inputs, counts = to_batch(readings)
    with torch.inference_mode():
        inputs = inputs.to(device, non_blocking=True)
        probabilities = torch.softmax(model(inputs), dim=1)
        best = surest_readings(probabilities, counts)
        probabilities = probabilities[best]
        if look_again:
            probabilities = second_look(model, inputs[best], probabilities)
    return probabilities.cpu()


# ---------------------------------------------------------------- for tests and the evaluation only

def request_images(request: dict) -> tuple[list[np.ndarray], bool]:
    """One request -> its images' primary (28, 28) readings and whether it was "instances", raising
    its InputError: the per-request view that tests and the fuzzer check (the handler calls decode_batch)."""
    grays, instances = request_grays(request)
    readings, errors = mnistify.mnist_like_many(grays)
    for error in errors:
        if error is not None:
            raise error
    return [r[0].numpy() for r in readings], instances


def readings_bytes(data: bytes, denoise_noisy: bool = True, multiple: bool = True) -> list[torch.Tensor]:
    """Image file bytes -> its (28, 28) readings, on the CPU: what the handler reads of a raw-body
    request (the evaluation and tests; agreement across devices goes through decode_batch)."""
    (readings,), (error,) = mnistify.mnist_like_many([decode_gray(data)], denoise_noisy, multiple)
    if error is not None:
        raise error
    return readings


def preprocess_bytes(data: bytes, denoise_noisy: bool = True) -> np.ndarray:
    """Image file bytes -> its primary (28, 28) reading, for tests."""
    return readings_bytes(data, denoise_noisy)[0].numpy()
