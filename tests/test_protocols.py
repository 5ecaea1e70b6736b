"""The Open Inference Protocol (v2) over REST against a real TorchServe, spoken by clients that
others wrote: Triton's `tritonclient` and KServe's `InferenceRESTClient`."""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.conftest import FIXTURES, png_bytes

pytestmark = pytest.mark.integration
SEVEN = (FIXTURES / "seven.png").read_bytes()


def key_headers(server) -> dict[str, str]:
    """A fresh dict per call: tritonclient adds its own headers to the one it is given."""
    return {"Authorization": f"Bearer {server.keys()['inference']}"}


def raw_digits(server, digits: np.ndarray) -> list[int]:
    """What the raw-bytes route answers for each image: the yardstick."""
    return [server.predict(png_bytes(d)).json()["digit"] for d in digits]


@pytest.fixture(scope="module")
def two_digits(server, mnist_sample) -> tuple[np.ndarray, list[int]]:
    digits = mnist_sample[0][:2]
    return digits, raw_digits(server, digits)


@pytest.fixture(scope="module")
def triton_client(server):
    client = triton.InferenceServerClient(server.inference.removeprefix("http://"), network_timeout=30)
    yield client
    client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary-extension", "json"])
def test_tritonclient_sends_a_png_as_bytes(server, triton_client, binary):
    image = triton.InferInput("image", [1], "BYTES")
    # JSON carries text only: there, each element is the file in base64.
    element = SEVEN if binary else base64.b64encode(SEVEN)
    image.set_data_from_numpy(np.array([element], dtype=object), binary_data=binary)
    result = triton_client.infer("mnist", [image], request_id="seven-1", headers=key_headers(server))
    assert result.as_numpy("digit").tolist() == [7]
    assert result.as_numpy("probabilities").shape == (1, 10)
    assert result.get_response()["id"] == "seven-1"


def test_tritonclient_sends_a_uint8_tensor(server, triton_client, two_digits):
    digits, expected = two_digits
    image = triton.InferInput("image", [2, 28, 28], "UINT8")
    image.set_data_from_numpy(digits)
    wanted = [triton.InferRequestedOutput("digit"), triton.InferRequestedOutput("confidence")]
    result = triton_client.infer("mnist", [image], outputs=wanted, headers=key_headers(server))
    assert result.as_numpy("digit").tolist() == expected
    assert result.as_numpy("probabilities") is None  # not asked for


def test_tritonclient_gets_the_service_errors(server, triton_client):
    image = triton.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([b"not an image"], dtype=object))
    with pytest.raises(triton.InferenceServerException) as refused:
        triton_client.infer("mnist", [image], headers=key_headers(server))
    assert refused.value.status() == "415" and "not an image" in refused.value.message()


def kserve_infer(server, inputs: list[InferInput]):
    async def infer():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            request = InferRequest("mnist", inputs, request_id="kserve-1")
            return await client.infer(server.inference, request, model_name="mnist", headers=key_headers(server))
        finally:
            await client.close()

    return asyncio.run(infer())


@pytest.mark.parametrize("binary", [True, False], ids=["binary-extension", "json"])
def test_kserve_client_sends_a_png_as_bytes(server, binary):
    image = InferInput("image", [1], "BYTES")
    element = SEVEN if binary else base64.b64encode(SEVEN).decode()
    image.set_data_from_numpy(np.array([element], dtype=object), binary_data=binary)
    response = kserve_infer(server, [image])
    assert response.id == "kserve-1" and response.model_name == "mnist"
    assert {o.name: o.as_numpy().tolist() for o in response.outputs}["digit"] == [7]


def test_kserve_client_sends_an_fp32_tensor(server, two_digits):
    digits, expected = two_digits
    image = InferInput("image", [2, 28, 28], "FP32")
    image.set_data_from_numpy((digits / 255.0).astype(np.float32), binary_data=False)
    response = kserve_infer(server, [image])
    assert {o.name: o.as_numpy().tolist() for o in response.outputs}["digit"] == expected


def test_health_routes_and_metadata(server):
    inference = key_headers(server)
    assert requests.get(f"{server.inference}/v2/health/live", headers=inference, timeout=10).json() == {"live": True}
    assert requests.get(f"{server.inference}/v2/health/ready", headers=inference, timeout=10).json() == {"ready": True}
    # TorchServe 0.12's REST frontend routes no per-model v2 metadata or ready route (docs/api.md)
    assert requests.get(f"{server.inference}/v2/models/mnist", headers=inference, timeout=10).status_code == 404
    management = {"Authorization": f"Bearer {server.keys()['management']}"}
    described = requests.get(f"{server.management}/models/mnist?customized=true", headers=management, timeout=30)
    metadata = described.json()[0]["customizedMetadata"]
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    assert [o["name"] for o in metadata["outputs"]] == ["digit", "confidence", "probabilities"]


MALFORMED = [
    ({"inputs": [{"name": "image", "datatype": "BOOL", "shape": [1], "data": [True]}]}, 400),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 28, 27], "data": [0] * 784}]}, 400),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 28, 28]}]}, 400),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [65], "data": ["AAAA"] * 65}]}, 400),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["bm90IGFuIGltYWdl"]}]}, 415),
]


def test_malformed_bodies_answer_4xx_and_harm_no_one_else(server):
    """Bad v2 bodies sent together with good ones: each bad one gets its own 4xx and
    {"error": ...}; every good one still gets its digit."""
    url = f"{server.inference}/v2/models/mnist/infer"
    seven = base64.b64encode(SEVEN).decode()
    good = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [seven]}]}
    jobs = [(good, 200)] * 16 + MALFORMED * 2

    def send(job):
        return requests.post(url, json=job[0], headers=key_headers(server), timeout=30)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, jobs))
    for (_, status), answer in zip(jobs, answers):
        assert answer.status_code == status, answer.text
        body = answer.json()
        if status == 200:
            assert body["outputs"][0]["data"] == [7]
        else:
            assert list(body) == ["error"] and body["error"]
