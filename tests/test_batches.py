"""Request encodings and whole batches, in-process: envelopes, isolation of bad requests, a batch
read as each image alone."""

from __future__ import annotations

import base64
import json

import numpy as np
import torch

from handler import preprocess as P
from handler.errors import BadRequest, InputError, NoDigitFound
from synthetic.families import generate
from tests.conftest import png_bytes
from tests.preprocess_helpers import one, request_images, similar, views_of_bytes


def test_raw_body_base64_and_data_url(digit, reference):
    data = png_bytes(digit)
    b64 = base64.b64encode(data)
    for request in (
        {"body": data},
        {"body": bytearray(data)},
        {"body": b64},
        {"data": b64 + b"\n"},
        {"body": b"data:image/png;base64," + b64},
        {"body": b64.decode()},
    ):
        assert np.array_equal(one(request), reference)


def test_multipart_field_names(digit, reference):
    assert np.array_equal(one({"file": png_bytes(digit)}), reference)
    assert np.array_equal(one({"anything": png_bytes(digit)}), reference)


def test_json_data_parsed_or_raw(digit, reference):
    b64 = base64.b64encode(png_bytes(digit)).decode()
    assert np.array_equal(one({"body": {"data": b64}}), reference)  # TorchServe parsed it
    assert np.array_equal(one({"body": json.dumps({"data": b64}).encode()}), reference)
    assert np.array_equal(one({"body": {"data": "data:image/png;base64," + b64}}), reference)


def test_instances_arrays_and_b64(digit, reference):
    b64 = base64.b64encode(png_bytes(digit)).decode()
    payload = {"instances": [digit.tolist(), (digit / 255).tolist(), [digit.tolist()], {"b64": b64}]}
    images, envelope = request_images({"body": payload})
    assert envelope.protocol == "v1" and len(images) == 4
    for image in images:
        assert similar(image, reference) > 0.99


def test_decode_batch_isolates_bad_requests(digit):
    batch = P.decode_batch([{"body": png_bytes(digit)}, {"body": b""}, {"body": {"instances": [digit.tolist()] * 3}}])
    assert len(batch.views) == 4
    assert batch.outcomes[0] == slice(0, 1) and batch.outcomes[2] == slice(1, 4)
    assert isinstance(batch.outcomes[1], BadRequest)
    assert [e.protocol for e in batch.envelopes] == ["torchserve", "torchserve", "v1"]


def test_a_batch_is_preprocessed_as_each_image_alone(mnist_sample):
    """decode_batch brings same-sized images to MNIST form together, in one stack per size; the
    views are, image by image, exactly what the image alone gives."""
    images, _ = mnist_sample
    bodies = [png_bytes(p) for p in images[:6]]
    for family in ("gaussian_noise", "salt_and_pepper", "paper_photo", "canvas_export"):
        bodies += generate(family, images[:3], seed=2)
    bodies.insert(3, png_bytes(np.zeros((28, 28), np.uint8)))  # blank, amid same-sized digits
    requests = [{"body": b} for b in bodies]
    requests.append({"body": {"instances": [images[0].tolist(), np.zeros((28, 28)).tolist()]}})
    batch = P.decode_batch(requests)
    assert [isinstance(r, NoDigitFound) for r in batch.outcomes] == [
        i in (3, len(bodies)) for i in range(len(requests))
    ]
    for body, rows in zip(bodies, batch.outcomes):
        if not isinstance(rows, InputError):
            alone = views_of_bytes(body)
            assert len(batch.views[rows.start]) == len(alone)
            assert all(np.array_equal(a, b) for a, b in zip(batch.views[rows.start], alone))


def test_light_ink_on_black_skips_polarity_and_background_with_the_same_views(mnist_sample):
    """Stacks of MNIST-like images (light ink, at least half of each black; if large, each cell of the
    background map black enough and no light border line) skip the polarity, margin and background
    steps (mnistify.on_black); each image reads the same as in a stack that takes them (beside a
    grey-ground image), at the edges of the rule too."""
    from handler.preprocess import mnistify

    digits = [p / np.float32(255) for p in mnist_sample[0][:12]]
    near_black = np.where(digits[0] == 0, np.float32(0.0015), digits[0])  # level 0, not exactly 0

    def lit(count: int, side: int = 28) -> np.ndarray:  # `count` bright pixels (4 of 784: 99.49% black)
        image = np.zeros(side * side, np.float32)
        image[np.linspace(side, side * side - side, count).astype(int)] = 1
        return image.reshape(side, side)

    def black(image: np.ndarray, count: int) -> np.ndarray:  # its `count` darkest pixels black, the rest lit
        flat = image.ravel().copy()
        order = np.argsort(flat, kind="stable")
        flat[order[:count]], flat[order[count:]] = 0, np.maximum(flat[order[count:]], 0.2)
        return flat.reshape(image.shape)

    large = np.pad(digits[2], 36)  # 100 px: a background map, every cell of it black enough
    line = np.concatenate(digits[4:8], 1)  # 28 x 112: a line of digits, also mapped
    margined = large.copy()
    margined[:, :3] = 0.8  # a light border column: it may be a margin
    grey_cell = large.copy()
    grey_cell[:50, :50] = np.maximum(grey_cell[:50, :50], 0.3)  # a cell (of 50 x 50) whose background level is not 0
    noisy = [P.decode_gray(b) for b in generate("gaussian_noise", mnist_sample[0][:2], seed=3)]
    cases = (
        [(d, True) for d in digits]
        + [
            (near_black, True),
            (black(digits[1], 392), True),
            (black(digits[1], 391), False),
            (lit(4), True),
            (lit(3), False),
            (lit(0), False),
            (np.pad(digits[3], 16), True),
            (large, True),
            (line, True),
            (margined, False),
            (grey_cell, False),
        ]
        + [(n, False) for n in noisy]
    )
    for image, shortcut in cases:
        assert mnistify.on_black(torch.from_numpy(image)[None]) == shortcut
        grey = np.full(image.shape, 0.5, np.float32)
        (alone, _), (error, _) = mnistify.candidate_views([image, image[::-1].copy()])
        (beside, _), (error2, _) = mnistify.candidate_views([image, grey])
        assert (alone is None) == (beside is None) and type(error) is type(error2)
        if alone is not None:
            assert len(alone) == len(beside) and all(torch.equal(a, b) for a, b in zip(alone, beside))


def test_decode_batch_answers_a_fault_of_ours_with_an_internal_error(digit, monkeypatch):
    """Past decoding the input is readable: an exception there is ours (500), not the client's."""
    from handler.errors import InternalError
    from handler.preprocess import mnistify

    def broken(x, *options):
        raise ValueError("injected fault")

    monkeypatch.setattr(mnistify, "_views_of_stack", broken)
    batch = P.decode_batch([{"body": png_bytes(digit)}, {"body": b""}])
    assert isinstance(batch.outcomes[0], InternalError) and batch.outcomes[0].body() == {
        "code": 500,
        "error": "internal error",
    }
    assert isinstance(batch.outcomes[1], BadRequest) and batch.views == []
