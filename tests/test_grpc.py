"""TorchServe's gRPC APIs against a real TorchServe, through stubs generated at test time from
TorchServe's own .proto files (harness/grpc_stubs.py): its inference API and the Open Inference
Protocol's, on the inference gRPC port, with the same keys as REST, for the digit model and the
number model; and the management API's DescribeModel, for the outputs ModelMetadata leaves out."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image

from handler.number.answers import NUMBER_METADATA
from harness.grpc_stubs import bearer, generate_stubs
from harness.samples import not_one_digit_samples
from ops.properties import max_request_size
from ops.version import release_version
from synthetic.numbers import mnist_row
from tests.conftest import FIXTURES, LARGE_PHOTO_DIGIT, png_bytes
from tests.test_number_server import NUMBER, assert_read, handwritten

pytestmark = pytest.mark.integration
SEVEN = (FIXTURES / "seven.png").read_bytes()


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    return generate_stubs(tmp_path_factory.mktemp("grpc-stubs"))


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        yield channel


@pytest.fixture()
def key(server) -> list[tuple[str, str]]:
    return bearer(server.keys()["inference"])


def infer_request(stubs, datatype: str, shape: list[int], request_id: str = "g-1", model: str = "mnist"):
    messages = stubs.open_inference_messages
    request = messages.ModelInferRequest(model_name=model, id=request_id)
    tensor = request.inputs.add(name="image", datatype=datatype)
    tensor.shape.extend(shape)
    return request, tensor


def tensors(response) -> dict[str, list]:
    fields = {"INT64": "int64_contents", "FP32": "fp32_contents", "BYTES": "bytes_contents"}
    return {o.name: list(getattr(o.contents, fields[o.datatype])) for o in response.outputs}


def test_predictions_api(stubs, channel, key):
    service = stubs.inference.InferenceAPIsServiceStub(channel)
    request = stubs.inference_messages.PredictionsRequest(model_name="mnist", input={"data": SEVEN})
    answer = service.Predictions(request, metadata=key, timeout=30)
    assert b'"digit": 7' in answer.prediction


def test_a_call_without_the_key_is_refused(stubs, channel):
    service = stubs.inference.InferenceAPIsServiceStub(channel)
    request = stubs.inference_messages.PredictionsRequest(model_name="mnist", input={"data": SEVEN})
    with pytest.raises(grpc.RpcError) as refused:
        service.Predictions(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_open_inference_png_as_bytes(stubs, channel, key, model_version):
    service = stubs.open_inference.GRPCInferenceServiceStub(channel)
    request, tensor = infer_request(stubs, "BYTES", [1])
    tensor.contents.bytes_contents.append(SEVEN)
    response = service.ModelInfer(request, metadata=key, timeout=30)
    assert response.id == "g-1" and response.model_version == model_version
    answer = tensors(response)
    assert answer["digit"] == [7] and len(answer["probabilities"]) == 10


def test_open_inference_uint8_tensor(stubs, channel, key, mnist_sample, server):
    digits, _ = mnist_sample
    expected = [server.predict(png_bytes(d)).json()["digit"] for d in digits[:3]]
    request, tensor = infer_request(stubs, "UINT8", [3, 28, 28])
    tensor.contents.uint_contents.extend(digits[:3].reshape(-1).tolist())
    response = stubs.open_inference.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=key, timeout=30)
    assert tensors(response)["digit"] == expected


def test_open_inference_messages_up_to_25_mib(stubs, channel, key, large_photo_file, mnist_sample):
    """TorchServe's gRPC servers take max_request_size as their largest inbound message."""
    service = stubs.open_inference.GRPCInferenceServiceStub(channel)
    request, tensor = infer_request(stubs, "BYTES", [1])
    tensor.contents.bytes_contents.append(large_photo_file)  # 17.5 MiB
    answer = tensors(service.ModelInfer(request, metadata=key, timeout=120))
    assert answer["digit"] == [mnist_sample[1][LARGE_PHOTO_DIGIT]]
    request, tensor = infer_request(stubs, "BYTES", [1])
    tensor.contents.bytes_contents.append(bytes(max_request_size()))
    with pytest.raises(grpc.RpcError) as refused:
        service.ModelInfer(request, metadata=key, timeout=120)
    # grpc-java answers RESOURCE_EXHAUSTED and resets the stream: a client may see either first
    assert refused.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED)
    request, tensor = infer_request(stubs, "BYTES", [1])
    tensor.contents.bytes_contents.append(SEVEN)
    assert tensors(service.ModelInfer(request, metadata=key, timeout=30))["digit"] == [7]


def test_open_inference_refusal_comes_as_outputs(stubs, channel, key):
    """TorchServe 0.12's gRPC frontend drops a request's own status: a refused input is a
    response with outputs "code" and "error" (the message as a JSON string)."""
    request, tensor = infer_request(stubs, "BYTES", [1], "bad-1")
    tensor.contents.bytes_contents.append(b"not an image")
    response = stubs.open_inference.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=key, timeout=30)
    answer = tensors(response)
    assert response.id == "bad-1" and answer["code"] == [415] and b"not an image" in answer["error"][0]


def test_open_inference_refusal_of_what_is_not_one_digit_names_its_reason(stubs, channel, key):
    """A letter, a doodle, several digits: outputs code 422, error and reason (BYTES, each a JSON
    string: TorchServe 0.12's frontend writes a BYTES element as its JSON text)."""
    service = stubs.open_inference.GRPCInferenceServiceStub(channel)
    for name, (data, reason) in not_one_digit_samples().items():
        request, tensor = infer_request(stubs, "BYTES", [1], name)
        tensor.contents.bytes_contents.append(data)
        answer = tensors(service.ModelInfer(request, metadata=key, timeout=30))
        assert answer["code"] == [422] and [json.loads(r) for r in answer["reason"]] == [reason]
        assert json.loads(answer["error"][0])


def test_open_inference_health_and_metadata(stubs, channel, key):
    service, messages = stubs.open_inference.GRPCInferenceServiceStub(channel), stubs.open_inference_messages
    assert service.ServerLive(messages.ServerLiveRequest(), metadata=key, timeout=10).live
    assert service.ServerReady(messages.ServerReadyRequest(), metadata=key, timeout=10).ready
    assert service.ModelReady(messages.ModelReadyRequest(name="mnist"), metadata=key, timeout=10).ready
    metadata = service.ModelMetadata(messages.ModelMetadataRequest(name="mnist"), metadata=key, timeout=10)
    # the frontend's own answer: the archive's version (answers add the weights' digest to it)
    assert metadata.name == "mnist" and list(metadata.versions) == [release_version()]


def test_a_stock_kserve_client_finds_no_service(channel, key):
    """KServe's and Triton's gRPC clients call the package `inference`; TorchServe serves the same
    messages under `org.pytorch.serve.grpc.openinference` (docs/api.md)."""
    call = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
    with pytest.raises(grpc.RpcError) as missing:
        call(b"", metadata=key, timeout=10)
    assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ---------------------------------------------------------------- the number model


@pytest.fixture(scope="module")
def number_png(mnist_sample) -> tuple[bytes, str]:
    """A handwritten number on white paper, as a PNG, and its digits."""
    digits, labels = mnist_sample
    return handwritten(digits[NUMBER]), "".join(map(str, labels[NUMBER]))


BLANK = png_bytes(np.full((60, 300), 255, np.uint8))  # a white page: no digit


def test_predictions_api_reads_a_number(stubs, channel, key, number_png):
    png, text = number_png
    service = stubs.inference.InferenceAPIsServiceStub(channel)
    request = stubs.inference_messages.PredictionsRequest(model_name="number", input={"data": png})
    answer = json.loads(service.Predictions(request, metadata=key, timeout=30).prediction)
    assert set(answer) == {"number", "confidence", "digits"}
    assert_read(answer, text, *Image.open(io.BytesIO(png)).size)
    request = stubs.inference_messages.PredictionsRequest(model_name="number", input={"data": BLANK})
    refused = json.loads(service.Predictions(request, metadata=key, timeout=30).prediction)
    assert refused["code"] == 422 and refused["reason"] == "no_digit" and refused["error"]


def test_open_inference_reads_a_number_with_its_boxes(stubs, channel, key, number_png, number_model_version):
    png, text = number_png
    request, tensor = infer_request(stubs, "BYTES", [1], "n-1", model="number")
    tensor.contents.bytes_contents.append(png)
    response = stubs.open_inference.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=key, timeout=30)
    assert (response.id, response.model_name, response.model_version) == ("n-1", "number", number_model_version)
    shapes = {o.name: (o.datatype, list(o.shape)) for o in response.outputs}
    assert shapes == {
        "number": ("BYTES", [1]), "confidence": ("FP32", [1]), "length": ("INT64", [1]),
        "digit": ("INT64", [len(text)]), "digit_confidence": ("FP32", [len(text)]), "box": ("INT64", [len(text), 4]),
    }  # fmt: skip
    answer = tensors(response)
    # a BYTES element arrives as its JSON text (docs/api.md, gRPC)
    assert [json.loads(n) for n in answer["number"]] == [text] and answer["length"] == [len(text)]
    assert answer["digit"] == [int(c) for c in text] and len(answer["box"]) == 4 * len(text)
    assert 0 < answer["confidence"][0] <= 1 and all(0 < c <= 1 for c in answer["digit_confidence"])


def test_open_inference_refusals_of_the_number_model_come_as_the_digit_models(stubs, channel, key, mnist_sample):
    """A blank page: code 422, error and reason no_digit; more than 12 digits: code 422 and error."""
    service = stubs.open_inference.GRPCInferenceServiceStub(channel)
    request, tensor = infer_request(stubs, "BYTES", [1], "blank-1", model="number")
    tensor.contents.bytes_contents.append(BLANK)
    response = service.ModelInfer(request, metadata=key, timeout=30)
    answer = tensors(response)
    assert response.id == "blank-1" and set(answer) == {"code", "error", "reason"}
    assert answer["code"] == [422] and [json.loads(r) for r in answer["reason"]] == ["no_digit"]
    assert "no digit" in json.loads(answer["error"][0])
    request, tensor = infer_request(stubs, "BYTES", [1], "long-1", model="number")
    tensor.contents.bytes_contents.append(png_bytes(mnist_row(mnist_sample[0][:13])))
    answer = tensors(service.ModelInfer(request, metadata=key, timeout=30))
    assert (
        set(answer) == {"code", "error"} and answer["code"] == [422] and "12 digits" in json.loads(answer["error"][0])
    )


def test_the_number_models_outputs_over_grpc(stubs, channel, key, server):
    """ModelMetadata is the frontend's own answer, with no tensors (docs/api.md); the model's outputs
    are its customized metadata, which the gRPC management API's DescribeModel gives as REST's does."""
    service, messages = stubs.open_inference.GRPCInferenceServiceStub(channel), stubs.open_inference_messages
    assert service.ModelReady(messages.ModelReadyRequest(name="number"), metadata=key, timeout=10).ready
    metadata = service.ModelMetadata(messages.ModelMetadataRequest(name="number"), metadata=key, timeout=10)
    assert metadata.name == "number" and list(metadata.versions) == [release_version()] and not metadata.outputs
    request = stubs.management_messages.DescribeModelRequest(model_name="number", customized=True)
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc_mgmt']}") as management:
        stub = stubs.management.ManagementAPIsServiceStub(management)
        (described,) = json.loads(
            stub.DescribeModel(request, metadata=bearer(server.keys()["management"]), timeout=30).msg
        )
    customized = described["customizedMetadata"]
    customized = json.loads(customized) if isinstance(customized, str) else customized
    assert customized["name"] == "number" and customized["outputs"] == NUMBER_METADATA
