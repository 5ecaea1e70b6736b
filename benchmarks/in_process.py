"""The benchmarks' request bodies and the in-process ceiling: DigitHandler.handle timed without HTTP.

make bench (its step 1) and make profile (benchmarks/batch_profile.py) share them: the bodies are
the 100 committed MNIST test digits as PNGs, as paper-photo JPEGs, and as PNGs in Open Inference
Protocol requests (BYTES, base64 in JSON), written to files wrk reads; for the number model
(NUMBER_SET, make bench only), the same digits four at a time in a row, as 4-digit numbers.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.inprocess import load_handler
from harness.samples import sample_digits
from synthetic.families import encode_image, generate
from synthetic.numbers import mnist_row

IN_PROCESS_BATCHES = (16, 64, 256)  # batch sizes of the in-process ceiling, besides 1 and the archive's


@dataclass(frozen=True)
class BodySet:
    family: str  # in synthetic/families.py
    content_type: str
    path: str = "/predictions/mnist"  # the route it is POSTed to
    v2: bool = False  # each image as an Open Inference Protocol request: BYTES, base64 in JSON
    digits: int = 1  # per body; more: that many in a row, a number for the number model

    @property
    def model(self) -> str:
        return "number" if self.digits > 1 else "mnist"

    @property
    def digit_pattern(self) -> str:
        """A Lua pattern (benchmarks/bench.lua) that an answer with a digit (a number) holds."""
        if self.digits > 1:
            return '"number": "%d+"'
        return '"name": "digit", "datatype": "INT64", "shape": %[1%], "data": %[%d' if self.v2 else '"digit": %d'

    def body(self, image: bytes) -> bytes:
        if not self.v2:
            return image
        tensor = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}
        return json.dumps({"inputs": [tensor]}).encode()


SETS = {
    "mnist_png": BodySet("clean", "image/png"),
    "paper_jpeg": BodySet("paper_photo", "image/jpeg"),
    "mnist_v2": BodySet("clean", "application/json", "/v2/models/mnist/infer", v2=True),
}
# The number model's row of make bench: 4-digit numbers, MNIST's own digits side by side (28 x 112 PNGs).
NUMBER_SET = BodySet("clean", "image/png", "/predictions/number", digits=4)
BODY_SETS = SETS | {"number_png": NUMBER_SET}


def write_bodies(folder: Path, sets: dict[str, BodySet] = SETS) -> dict[str, tuple[Path, list]]:
    """Body files per set and their labels: the 100 committed MNIST test digits, as PNG and paper
    JPEG (labels: the digits), or as numbers of several (labels: the numbers)."""
    digits, labels = sample_digits()
    written = {}
    for name, body_set in sets.items():
        if body_set.digits > 1:
            images, set_labels = _numbers(digits, labels, body_set.digits)
        else:
            images, set_labels = generate(body_set.family, digits, seed=5), [int(y) for y in labels]
        paths = []
        for i, image in enumerate(images):
            path = folder / f"{name}_{i:03d}"
            path.write_bytes(body_set.body(image))
            paths.append(str(path))
        listing = folder / f"{name}.txt"
        listing.write_text("\n".join(paths) + "\n")
        written[name] = (listing, set_labels)
    return written


def _numbers(digits, labels, length: int) -> tuple[list[bytes], list[str]]:
    """The digits `length` at a time, side by side in MNIST's cells, as PNGs, and the numbers they write."""
    starts = range(0, len(digits) - length + 1, length)
    return (
        [encode_image(mnist_row(digits[i : i + length])) for i in starts],
        ["".join(str(int(y)) for y in labels[i : i + length]) for i in starts],
    )


def in_process(
    sets, batch_sizes: tuple[int, ...], seconds: float = 3.0, suffix: str = "", **settings
) -> tuple[str, dict]:
    """Images/s of one worker's whole handler path (decode, preprocess, forward, postprocess; no
    HTTP) at each batch size, on the device a worker would use (the first GPU when there is one),
    and that device. Batches cycle through the set's bodies; `settings` override the handler's."""
    gpu_id = 0 if torch.cuda.is_available() else None
    handlers = {}  # per model (BODY_SETS' sets name theirs): its handler and context
    results = {}
    for name, (listing, _) in sets.items():
        model = BODY_SETS[name].model
        handler, context = handlers.get(model) or handlers.setdefault(
            model, load_handler(gpu_id=gpu_id, model_name=model, **settings)
        )
        bodies = itertools.cycle(listed_bodies(listing))
        for size in sorted(set(batch_sizes)):
            images, wall, _ = timed_handle(handler, context, batches_of(bodies, size), seconds)
            results[f"{name}_batch{size}{suffix}"] = round(images / wall, 1)
    return str(handler.device), results


def cpu_per_request(sets, batch: int, seconds: float = 3.0) -> dict[str, float]:
    """CPU microseconds (every thread of this process) per request of one worker's whole handler
    path, batches of `batch`, per set: what the number row's goal compares, without HTTP."""
    out = {}
    for name, (listing, _) in sets.items():
        handler, context = load_handler(model_name=BODY_SETS[name].model)
        batches = batches_of(itertools.cycle(listed_bodies(listing)), batch)
        timed_handle(handler, context, batches, 0.5)  # warm-up: the first calls allocate
        requests, _, cpu = timed_handle(handler, context, batches, seconds)
        out[name] = round(cpu / requests * 1e6, 1)
    return out


def listed_bodies(listing: Path | str) -> list[bytes]:
    """The bodies of a write_bodies listing, in its order."""
    return [Path(p).read_bytes() for p in Path(listing).read_text().split()]


def batches_of(bodies: Iterator[bytes], size: int) -> list[list[dict]]:
    """About 256 images' worth of TorchServe batches of `size` requests, the next bodies of `bodies`."""
    return [[{"body": next(bodies)} for _ in range(size)] for _ in range(max(1, 256 // size))]


def timed_handle(handler, context, batches: list[list[dict]], seconds: float) -> tuple[int, float, float]:
    """The batches handled over and over for about `seconds`: images handled, wall seconds and CPU
    seconds (every thread of the process)."""
    images, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        for batch in batches:
            handler.handle(batch, context)
            images += len(batch)
    return images, time.perf_counter() - wall, time.process_time() - cpu
