from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handler.calibration import CALIBRATION_FILE
from handler.number.confidence import NUMBER_CALIBRATION_FILE
from handler.request_log import served_version
from harness.inprocess import load_handler
from harness.local_server import LocalTorchServe
from harness.samples import sample_digits
from model.line_network import LINE_READER_FILE
from model.open_set import OPEN_SET_FILE
from ops.build_archive import build_archive
from ops.host_settings import MODEL_NAMES
from ops.paths import ROOT
from ops.version import release_version
from synthetic.camera import paper_photo, phone_heic, phone_jpeg, sensor_photo
from synthetic.families import encode_image
from synthetic.families import encode_image as png_bytes  # tests encode PNGs with it

FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """100 real MNIST test digits, (100, 28, 28) uint8, and their labels."""
    return sample_digits()


@pytest.fixture(scope="session")
def model_version() -> str:
    """What every answer's X-Model-Version and v2 model_version must say: the release's version and
    a digest of the committed weights, their calibration and the open-set head (handler/request_log.py)."""
    served = ROOT / "model" / "mnist_cnn.pt", ROOT / CALIBRATION_FILE, ROOT / OPEN_SET_FILE
    return served_version(release_version(), *served)


@pytest.fixture(scope="session")
def number_model_version() -> str:
    """The number model's: the release's version and a digest of the weights, both calibrations, the
    open-set head and the line reader (handler/number_handler.py)."""
    served = ROOT / "model" / "mnist_cnn.pt", ROOT / CALIBRATION_FILE, ROOT / OPEN_SET_FILE
    return served_version(release_version(), *served, ROOT / NUMBER_CALIBRATION_FILE, ROOT / LINE_READER_FILE)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """Both archives, as `make archive` builds them: mnist.mar and number.mar."""
    store = tmp_path_factory.mktemp("model_store")
    for name in MODEL_NAMES:
        build_archive(store, name)
    return store


@pytest.fixture(scope="session")
def server(model_store):
    """The real service: the built archives under TorchServe with the repository's config, the digit
    model and the number model registered (and answering) when it starts."""
    ts = LocalTorchServe(model_store)
    ts.start()
    yield ts
    ts.stop()


@pytest.fixture()
def handler_and_context(tmp_path):
    """An initialized DigitHandler over the committed weights, with an in-process context."""
    # Metrics flushed by each batch, not by the background thread: tests read them deterministically.
    return load_handler(model_dir=tmp_path, metrics_flush_seconds=0)


@pytest.fixture(scope="session")
def digit(mnist_sample) -> np.ndarray:
    """One MNIST test digit, (28, 28) uint8, light on black."""
    return mnist_sample[0][0]


@pytest.fixture(scope="session")
def reference(digit) -> np.ndarray:
    """The primary view the preprocessing makes of `digit` as a PNG: what other encodings must match."""
    from tests.preprocess_helpers import primary_view

    return primary_view(png_bytes(digit))


# ---------------------------------------------------------------- phone photos (synthetic/camera.py)

CAMERA_DIGIT = 4  # a 7 of the committed sample: read sideways it is another digit


@pytest.fixture(scope="session")
def camera_label(mnist_sample) -> int:
    return int(mnist_sample[1][CAMERA_DIGIT])


@pytest.fixture(scope="session")
def camera_jpeg(mnist_sample) -> bytes:
    """The largest photo the service reads: 50 MP (6144 x 8192 shown, stored 8192 x 6144 and turned
    by EXIF), a JPEG at quality 90. Made once a session: it takes seconds."""
    return phone_jpeg(sensor_photo(mnist_sample[0][CAMERA_DIGIT], 6144, 8192, np.random.default_rng(1)))


@pytest.fixture(scope="session")
def camera_photo(mnist_sample):
    """A 3 MP phone photo's sensor pixels (1512 x 2016 shown), for the other formats."""
    return sensor_photo(mnist_sample[0][CAMERA_DIGIT], 1512, 2016, np.random.default_rng(2))


@pytest.fixture(scope="session")
def camera_heic(camera_photo) -> bytes:
    """camera_photo as a phone's HEIC: a grid of tiles, a 320 px thumbnail, EXIF orientation."""
    return phone_heic(camera_photo)


LARGE_PHOTO_DIGIT = 3


@pytest.fixture(scope="session")
def large_photo_file(mnist_sample) -> bytes:
    """A photo of a digit as an uncompressed TIFF of 17.5 MiB, over the old 8 MiB body limit: as
    base64 in JSON it is still under the 25 MiB one."""
    photo = paper_photo(mnist_sample[0][LARGE_PHOTO_DIGIT], 2800, 2184, np.random.default_rng(4))
    return encode_image(photo, "TIFF")
