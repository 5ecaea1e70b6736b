"""TorchServe's gRPC APIs against a real TorchServe, through stubs generated at test time from
TorchServe's own .proto files (harness/grpc_stubs.py): its inference API and the Open Inference
Protocol's, on the inference gRPC port, with the same keys as REST."""

from __future__ import annotations

import grpc
import pytest

from harness.grpc_stubs import bearer, generate_stubs
from ops.properties import max_request_size
from ops.version import release_version
from tests.conftest import FIXTURES, LARGE_PHOTO_DIGIT, png_bytes

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


def infer_request(stubs, datatype: str, shape: list[int], request_id: str = "g-1"):
    messages = stubs.open_inference_messages
    request = messages.ModelInferRequest(model_name="mnist", id=request_id)
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
