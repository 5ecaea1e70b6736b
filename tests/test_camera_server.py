"""Phone photos through the real TorchServe: a 50 MP JPEG, a HEIC, an AVIF and a WebP answered with
their digit in the same batches as MNIST PNGs and a truncated HEIC (400); bodies up to 25 MiB read
on every route, and a byte more refused there."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests

from harness.clients import predict_concurrently
from ops.properties import max_request_size
from synthetic.camera import orientation_exif
from synthetic.families import encode_image as encode
from tests.conftest import LARGE_PHOTO_DIGIT, png_bytes

pytestmark = pytest.mark.integration
V1, V2 = "/v1/models/mnist:predict", "/v2/models/mnist/infer"


def test_phone_photos_share_batches_with_other_requests(
    server, camera_jpeg, camera_heic, camera_photo, camera_label, mnist_sample
):
    images, labels = mnist_sample
    exif = orientation_exif()
    jobs = (
        [  # (body, content type, status, digit)
            (camera_jpeg, "image/jpeg", 200, camera_label),
            (camera_heic, "image/heic", 200, camera_label),
            (encode(camera_photo, "AVIF", quality=70, speed=10, exif=exif), "image/avif", 200, camera_label),
            (encode(camera_photo, "WEBP", quality=85, exif=exif), "image/webp", 200, camera_label),
            (camera_heic[: len(camera_heic) // 2], "image/heic", 400, None),
        ]
        + [(png_bytes(images[i]), "image/png", 200, int(labels[i])) for i in range(11)]
    )
    pids = sorted(server.worker_pids())
    responses = predict_concurrently(server, [j[0] for j in jobs], [j[1] for j in jobs], concurrency=len(jobs))
    for (body, kind, status, digit), response in zip(jobs, responses):
        assert response.status_code == status, (kind, len(body), response.text)
        answer = response.json()
        if status == 200:
            assert answer["digit"] == digit, (kind, answer)
        else:
            assert answer["code"] == 400 and "truncated" in answer["error"], (kind, answer)
    assert sorted(server.worker_pids()) == pids, "a worker restarted"


def bodies(image: bytes) -> dict[str, tuple[str, bytes, str]]:
    """The image on each route: (path, body, content type)."""
    b64 = base64.b64encode(image).decode()
    tensor = {"name": "image", "datatype": "BYTES", "shape": [1]}
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 4 + len(image)}}]}).encode()
    form = requests.Request("POST", "http://form", files={"file": ("photo", image, "image/tiff")}).prepare()
    return {
        "raw": ("", image, "image/tiff"),
        "multipart": ("", form.body, form.headers["Content-Type"]),
        "v1": (V1, json.dumps({"instances": [{"b64": b64}]}).encode(), "application/json"),
        "v2": (V2, json.dumps({"inputs": [{**tensor, "data": [b64]}]}).encode(), "application/json"),
        "v2 binary": (V2, header + len(image).to_bytes(4, "little") + image, f"binary:{len(header)}"),
    }


def send(server, path: str, body: bytes, kind: str) -> requests.Response:
    if kind.startswith("binary:"):  # Triton's binary-data extension: the JSON header's length in a header
        headers = {**server.headers(), "Inference-Header-Content-Length": kind.partition(":")[2]}
        return requests.post(server.inference + path, data=body, headers=headers, timeout=120)
    return server.predict(body, kind, timeout=120, path=path)


def test_bodies_up_to_25_mib_are_read_on_every_route(server, large_photo_file, mnist_sample):
    label = int(mnist_sample[1][LARGE_PHOTO_DIGIT])
    for route, (path, body, kind) in bodies(large_photo_file).items():
        assert 8 * 2**20 < len(body) <= max_request_size(), route
        response = send(server, path, body, kind)
        assert response.status_code == 200, (route, response.text)
        answer = response.json()
        digit = answer["predictions"][0]["digit"] if route == "v1" else answer.get("digit")
        if route.startswith("v2"):
            digit = next(o["data"][0] for o in answer["outputs"] if o["name"] == "digit")
        assert digit == label, route


def test_a_byte_over_25_mib_is_refused_on_every_route(server):
    image = b"\xff\xd8\xff" + bytes(max_request_size())  # over the limit by itself
    for route, (path, body, kind) in bodies(image).items():
        assert send(server, path, body, kind).status_code == 413, route
    assert server.predict(png_bytes(np.eye(28, dtype=np.uint8) * 255)).status_code == 200
