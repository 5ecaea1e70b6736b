"""The benchmarks' request bodies and the in-process ceiling: DigitHandler.handle timed without HTTP.

make bench (its step 1) and make profile (benchmarks/batch_profile.py) share them: the bodies are
the 100 committed MNIST test digits as PNGs, as paper-photo JPEGs, and as PNGs in Open Inference
Protocol requests (BYTES, base64 in JSON), written to files wrk reads.
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
from synthetic.families import generate

IN_PROCESS_BATCHES = (16, 64, 256)  # batch sizes of the in-process ceiling, besides 1 and the archive's


@dataclass(frozen=True)
class BodySet:
    family: str  # in synthetic/families.py
    content_type: str
    path: str = "/predictions/mnist"  # the route it is POSTed to
    v2: bool = False  # each image as an Open Inference Protocol request: BYTES, base64 in JSON

    @property
    def digit_pattern(self) -> str:
        """A Lua pattern (benchmarks/bench.lua) that an answer with a digit holds."""
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


def write_bodies(folder: Path) -> dict[str, tuple[Path, list[int]]]:
    """Body files per set and their labels: the 100 committed MNIST test digits, as PNG and paper JPEG."""
    digits, labels = sample_digits()
    sets = {}
    for name, body_set in SETS.items():
        paths = []
        for i, image in enumerate(generate(body_set.family, digits, seed=5)):
            path = folder / f"{name}_{i:03d}"
            path.write_bytes(body_set.body(image))
            paths.append(str(path))
        listing = folder / f"{name}.txt"
        listing.write_text("\n".join(paths) + "\n")
        sets[name] = (listing, [int(y) for y in labels])
    return sets


def in_process(
    sets, batch_sizes: tuple[int, ...], seconds: float = 3.0, suffix: str = "", **settings
) -> tuple[str, dict]:
    """Images/s of one worker's whole handler path (decode, preprocess, forward, postprocess; no
    HTTP) at each batch size, on the device a worker would use (the first GPU when there is one),
    and that device. Batches cycle through the set's bodies; `settings` override the handler's."""
    handler, context = load_handler(gpu_id=0 if torch.cuda.is_available() else None, **settings)
    results = {}
    for name, (listing, _) in sets.items():
        bodies = itertools.cycle(listed_bodies(listing))
        for size in sorted(set(batch_sizes)):
            images, wall, _ = timed_handle(handler, context, batches_of(bodies, size), seconds)
            results[f"{name}_batch{size}{suffix}"] = round(images / wall, 1)
    return str(handler.device), results


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
