"""A TorchServe batch of requests -> per image its candidate views, per request its images or its
error: one bad request never spoils the others. Where preprocessing ends; handler/inference.py
takes the views from here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from handler.errors import BadRequest, InputError, InternalError, RequestError
from handler.preprocess.decode import decode_gray, decode_pixels
from handler.preprocess.device_jpeg import DeviceJpeg, decode_jpegs, pixels_or_device_jpeg
from handler.preprocess.envelopes import PLAIN, Envelope, open_request, payload_grays
from handler.preprocess.mnistify import GPU_MIN_PIXELS, candidate_views
from handler.preprocess.open_inference import OUTPUTS

logger = logging.getLogger(__name__)


@dataclass
class RequestBatch:
    """A TorchServe batch decoded request by request: one bad request never spoils the others."""

    # Per image of all requests, in order: its (28, 28) candidate views (mnistify) on the worker's
    # device, the first the primary one.
    views: list[list[torch.Tensor]] = field(default_factory=list)
    outcomes: list[slice | RequestError] = field(default_factory=list)  # per request: its images, or why none
    envelopes: list[Envelope] = field(default_factory=list)  # per request: how to answer it

    def add(self, views: list[list[torch.Tensor]], envelope: Envelope) -> None:
        self.outcomes.append(slice(len(self.views), len(self.views) + len(views)))
        self.views.extend(views)
        self.envelopes.append(envelope)

    def reject(self, error: RequestError, envelope: Envelope = PLAIN) -> None:
        self.outcomes.append(error)
        self.envelopes.append(envelope)

    def refuse_images(self, errors: list[RequestError | None]) -> None:
        """Per image of `views`, its error or None: a request with a refused image is refused with
        the first one's error, as one that fails to decode is (its other images are not answered)."""
        for i, span in enumerate(self.outcomes):
            if isinstance(span, slice):
                self.outcomes[i] = next((e for e in errors[span] if e is not None), span)

    @property
    def explains(self) -> bool:
        """Whether a request read (not refused) asks for an explanation: TorchServe batches both kinds together."""
        return any(e.explain for e, o in zip(self.envelopes, self.outcomes) if isinstance(o, slice))


def decode_batch(
    requests: list[dict],
    device: torch.device | str = "cpu",
    jpeg_on_device: bool | None = None,
    gpu_min_pixels: int = GPU_MIN_PIXELS,
    headers: list[Mapping[str, str]] | None = None,
) -> RequestBatch:
    """Decode each request on its own (one bad request never spoils the others), then bring all
    the batch's images to MNIST form together on `device`: each call is paid once per batch.
    Plain JPEGs are decoded together on the device when `jpeg_on_device` (default: on CUDA;
    Pillow's reduced-size JPEG decoding costs less on the CPU); images under `gpu_min_pixels` are
    preprocessed on the CPU even then (GPU_MIN_PIXELS). `headers`: each request's, lowercased.

    Only parsing and decoding failures are the client's (4xx). Past decoding the input is a
    readable image, so an exception there is a bug of ours: that request gets an InternalError
    (500), and the rest of the batch is still answered.
    """
    decoded, grays = decode_requests(requests, _decoder(device, jpeg_on_device), headers)
    pixels = _decoded_on_device(grays, device)  # per image: (H, W) pixels, or the client's error
    readable = iter(zip(*_views_isolated([p for p in pixels if not isinstance(p, InputError)], device, gpu_min_pixels)))
    views, errors = [], []
    for p in pixels:
        image_views, error = (None, p) if isinstance(p, InputError) else next(readable)
        views.append(image_views)
        errors.append(error)
    batch = RequestBatch()
    for indices, envelope in decoded:
        if isinstance(indices, InputError):
            batch.reject(indices, envelope)
            continue
        error = next((errors[i] for i in indices if errors[i] is not None), None)
        if error is None:
            batch.add([views[i] for i in indices], envelope)
        else:
            batch.reject(error, envelope)
    return batch


def decode_requests(
    requests: list[dict],
    decode: Callable[[bytes], Any],
    headers: list[Mapping[str, str]] | None = None,
    outputs: tuple[str, ...] = OUTPUTS,
    explains: bool = True,
) -> tuple[list[tuple[range | InputError, Envelope]], list]:
    """Each request decoded on its own: per request its images' indices into the returned list of
    `decode`'s results (or pixels sent as numbers), or the client's error; and how to answer it.
    `outputs`: the v2 output names the model's predictions answer (the number reader's are its
    own); `explains`: whether the model answers explanation routes (a 400 when not)."""
    decoded: list[tuple[range | InputError, Envelope]] = []
    images: list = []
    for i, request in enumerate(requests):
        envelope = PLAIN
        try:
            envelope, payload = open_request(request, headers[i] if headers else {}, outputs)
            if envelope.explain and not explains:
                raise BadRequest("no_explanation", "this model answers no explanations: ask its prediction route")
            found = payload_grays(envelope, payload, decode, outputs)
        except InputError as error:
            decoded.append((error, envelope))
            continue
        except Exception as error:  # decoders can raise anything on hostile bytes
            decoded.append((_unreadable(error), envelope))
            continue
        decoded.append((range(len(images), len(images) + len(found)), envelope))
        images.extend(found)
    return decoded, images


def _decoder(device, jpeg_on_device: bool | None):
    """How image bytes are read: on a GPU worker (or when told) plain JPEGs wait, to be decoded
    together on the device (device_jpeg.py, _decoded_on_device)."""
    if jpeg_on_device is None:
        jpeg_on_device = torch.device(device).type == "cuda"
    return pixels_or_device_jpeg if jpeg_on_device else decode_pixels


def _decoded_on_device(grays: list[np.ndarray | DeviceJpeg], device) -> list[np.ndarray | torch.Tensor | InputError]:
    """The JPEGs left for the device decoded there in one call; should its decoder refuse them,
    each takes Pillow's path, whose error (the client's 4xx) then stands in for the image."""
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


def _views_isolated(grays: list[np.ndarray], device, gpu_min_pixels: int) -> tuple[list, list[RequestError | None]]:
    """candidate_views, falling back to one image at a time should the batch raise: only the
    images that raise alone get an InternalError."""
    try:
        return candidate_views(grays, device=device, gpu_min_pixels=gpu_min_pixels)
    except Exception:
        logger.exception("batched preprocessing failed; retrying image by image")
    views, errors = [], []
    for gray in grays:
        try:
            (image_views,), (error,) = candidate_views([gray], device=device, gpu_min_pixels=gpu_min_pixels)
        except Exception:
            logger.exception("preprocessing failed on a decoded %s image", "x".join(map(str, gray.shape)))
            image_views, error = None, InternalError()
        views.append(image_views)
        errors.append(error)
    return views, errors


def _unreadable(error: Exception) -> BadRequest:
    """A decoder raised something other than our typed errors on the client's bytes."""
    logger.warning("unreadable input", exc_info=error)
    return BadRequest("unreadable", f"the input could not be read ({type(error).__name__})")
