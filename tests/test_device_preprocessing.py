"""JPEGs decoded on the device, and preprocessing on an accelerator: the CPU's answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from handler import preprocess as P
from handler.errors import InputError
from synthetic.families import FAMILIES, generate
from synthetic.families import encode_image as encode
from synthetic.fonts import fonts_available
from tests.conftest import png_bytes
from tests.preprocess_helpers import similar

# ---------------------------------------------------------------- JPEGs decoded on the device


def _jpeg(pixels: np.ndarray, **save) -> bytes:
    return encode(Image.fromarray(pixels), "JPEG", quality=90, **save)


def test_only_plain_whole_jpegs_are_left_for_the_device(digit):
    from handler.preprocess.decode import FULL_DECODE_PIXELS
    from handler.preprocess.device_jpeg import device_jpeg

    photo = np.repeat(255 - digit[:, :, None], 3, axis=2)
    plain = _jpeg(photo)
    assert device_jpeg(plain) and device_jpeg(_jpeg(255 - digit))
    assert not device_jpeg(_jpeg(photo, progressive=True))
    assert not device_jpeg(encode(Image.fromarray(photo).convert("CMYK"), "JPEG"))
    assert not device_jpeg(plain[:-200])  # truncated: no EOI
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: Pillow's path applies the rotation
    assert not device_jpeg(_jpeg(photo, exif=exif.tobytes()))
    assert not device_jpeg(png_bytes(digit))
    side = int(FULL_DECODE_PIXELS**0.5) + 1  # too large to decode at full size: Pillow's path reads it reduced
    big = plain.replace(b"\x00\x1c\x00\x1c", side.to_bytes(2, "big") * 2, 1)
    assert big != plain and not device_jpeg(big)


def test_the_device_jpeg_road_reads_photos_as_pillows_road_does(mnist_sample):
    """torchvision's decoder (nvJPEG on a GPU, libjpeg here) at full size, then reduced: pixels
    within a few levels of Pillow's reduced-size decoding, and nearly the same views (the
    digits: make agreement)."""
    from handler.preprocess.device_jpeg import decode_jpegs

    images, labels = mnist_sample
    photos = generate("paper_photo", images[:24], seed=3, labels=labels[:24])
    assert all(P.decode_image(p).format == "JPEG" for p in photos)
    on_device = decode_jpegs(photos, "cpu")
    for photo, pixels in zip(photos, on_device):
        reference = P.decode_gray(photo)
        assert pixels.shape == reference.shape
        assert np.abs(pixels.numpy() - reference).mean() < 4 / 255
    requests = [{"body": p} for p in photos]
    device_path = P.decode_batch(requests, "cpu", jpeg_on_device=True)
    pillow_path = P.decode_batch(requests, "cpu")
    assert all(isinstance(o, slice) for o in device_path.outcomes)
    same = [similar(a[0].numpy(), b[0].numpy()) for a, b in zip(device_path.views, pillow_path.views)]
    assert min(same) > 0.9, same  # the primary views the network gets


def test_a_batch_the_device_decoder_refuses_takes_pillows_path(mnist_sample, monkeypatch):
    from handler.preprocess import device_jpeg

    def refuse(*args, **kwargs):
        raise RuntimeError("nvjpeg: NVJPEG_STATUS_BAD_JPEG")

    monkeypatch.setattr(device_jpeg, "decode_jpeg", refuse)
    images, labels = mnist_sample
    photos = generate("paper_photo", images[:3], seed=3, labels=labels[:3])
    broken = photos[0][:600] + bytes(400) + photos[0][1000:]  # whole header and EOI, damaged scan data
    batch = P.decode_batch([{"body": p} for p in photos + [broken]], "cpu", jpeg_on_device=True)
    assert [isinstance(o, slice) for o in batch.outcomes[:3]] == [True] * 3
    reference = P.decode_batch([{"body": p} for p in photos], "cpu")
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batch.views, reference.views))
    assert isinstance(batch.outcomes[3], (slice, InputError))  # Pillow reads it or says what is wrong


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_views_on_cuda_equal_those_on_the_cpu(mnist_sample):
    """Every family through the whole preprocessing on both devices: the same views, bar
    float rounding (JPEGs here take Pillow's path on both, to compare the preprocessing alone;
    small images too are preprocessed on the GPU here, where the handler would use the CPU)."""
    images, labels = mnist_sample
    for family in FAMILIES:
        if family == "printed" and not fonts_available():
            continue
        requests = [{"body": u} for u in generate(family, images[:32], seed=1, labels=labels[:32])]
        cpu = P.decode_batch(requests, "cpu")
        gpu = P.decode_batch(requests, "cuda", jpeg_on_device=False, gpu_min_pixels=0)
        assert [type(o) for o in cpu.outcomes] == [type(o) for o in gpu.outcomes], family
        for a, b in zip(cpu.views, gpu.views):
            assert len(a) == len(b) and all(y.is_cuda for y in b), family
            assert max((x - y.cpu()).abs().max().item() for x, y in zip(a, b)) < 0.02, family


def test_on_an_accelerator_small_stacks_are_worked_on_on_the_cpu_and_moved_there_in_one_copy(mnist_sample, monkeypatch):
    """The placement rule without a GPU: "meta" stands in for the accelerator (a stack worked on
    there would fail: it holds no data)."""
    from handler.preprocess import mnistify

    images, _ = mnist_sample
    grays = [d.astype(np.float32) / 255 for d in images[:6]]
    seen, work = [], mnistify._views_of_stack
    monkeypatch.setattr(mnistify, "_views_of_stack", lambda x, *a: seen.append(x.device.type) or work(x, *a))
    views, errors = mnistify.candidate_views(grays, device="meta")
    assert seen == ["cpu"] and errors == [None] * 6
    assert all(r.device.type == "meta" and r.shape == (28, 28) for image in views for r in image)
    cpu, _ = mnistify.candidate_views(grays)
    assert [len(r) for r in views] == [len(r) for r in cpu]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_small_images_are_preprocessed_on_the_cpu_and_read_on_the_gpu(mnist_sample, monkeypatch):
    """MNIST-sized uploads are worked on on the CPU (mnistify.GPU_MIN_PIXELS), photos on the GPU;
    every view ends on the GPU, equal to the CPU's."""
    from handler.preprocess import mnistify

    images, labels = mnist_sample
    requests = [{"body": png_bytes(d)} for d in images[:8]]
    requests += [{"body": p} for p in generate("paper_photo", images[8:12], seed=3, labels=labels[8:12])]
    stacks = []
    work = mnistify._views_of_stack
    monkeypatch.setattr(
        mnistify, "_views_of_stack", lambda x, *a: stacks.append((x.shape[1:], x.device.type)) or work(x, *a)
    )
    cpu = P.decode_batch(requests, "cpu")
    stacks.clear()
    gpu = P.decode_batch(requests, "cuda")
    assert all(r.is_cuda for views in gpu.views for r in views)
    assert all(torch.equal(a[0], b[0].cpu()) for a, b in zip(cpu.views[:8], gpu.views[:8]))
    assert {device for shape, device in stacks if shape == (28, 28)} == {"cpu"}
    assert {device for shape, device in stacks if shape[0] * shape[1] >= mnistify.GPU_MIN_PIXELS} == {"cuda"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_jpegs_decoded_by_nvjpeg_read_as_pillows_road_does(mnist_sample):
    images, labels = mnist_sample
    requests = [{"body": p} for p in generate("paper_photo", images[:32], seed=3, labels=labels[:32])]
    gpu, cpu = P.decode_batch(requests, "cuda"), P.decode_batch(requests, "cpu")
    assert all(isinstance(o, slice) for o in gpu.outcomes)
    assert all(r[0].is_cuda for r in gpu.views)
    assert min(similar(a[0].cpu().numpy(), b[0].numpy()) for a, b in zip(gpu.views, cpu.views)) > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_damaged_jpegs_on_cuda_answer_each_request_and_leave_the_device_usable(mnist_sample):
    """Whole headers and EOI, damaged scan data: they reach nvJPEG. Each request is answered (its
    digit, or a 4xx from Pillow's path), and the device still works afterwards."""
    images, labels = mnist_sample
    photo = generate("paper_photo", images[:1], seed=3, labels=labels[:1])[0]
    rng = np.random.default_rng(0)
    damaged = []
    for _ in range(40):
        data = bytearray(photo)
        at = rng.integers(700, len(data) - 300, size=8)
        data[at[0] : at[0] + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        for i in at[1:]:
            data[i] ^= 0xFF
        damaged.append(bytes(data))
    batch = P.decode_batch([{"body": d} for d in damaged + [photo]], "cuda")
    assert all(isinstance(o, (slice, InputError)) for o in batch.outcomes)
    assert isinstance(batch.outcomes[-1], slice)
    assert torch.ones(2, device="cuda").sum().item() == 2
