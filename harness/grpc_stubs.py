"""Python stubs for TorchServe's gRPC APIs, generated from the `.proto` files inside the installed
TorchServe (its frontend jar carries them) by grpcio-tools: nothing hand-written, always the
version that serves. Used by the gRPC tests and the container checks.

    stubs = generate_stubs(folder)
    stubs.inference.InferenceAPIsServiceStub(channel)       # TorchServe's own: Ping, Predictions
    stubs.open_inference.GRPCInferenceServiceStub(channel)  # the Open Inference Protocol's
    stubs.management.ManagementAPIsServiceStub(channel)     # TorchServe's management, its own port
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

PROTOS = ("inference.proto", "open_inference_grpc.proto", "management.proto")
_IMPORTED = ("google/rpc/status.proto",)  # inference.proto's import that grpcio-tools does not bundle


@dataclass(frozen=True)
class Stubs:
    inference: ModuleType  # inference_pb2_grpc
    inference_messages: ModuleType  # inference_pb2
    open_inference: ModuleType  # open_inference_grpc_pb2_grpc
    open_inference_messages: ModuleType  # open_inference_grpc_pb2
    management: ModuleType  # management_pb2_grpc
    management_messages: ModuleType  # management_pb2


def frontend_jar() -> Path:
    import ts

    return Path(ts.__file__).parent / "frontend" / "model-server.jar"


def generate_stubs(folder: Path) -> Stubs:
    """Extract the protos from the jar into `folder`, run protoc on them there, import the result."""
    import grpc_tools
    from grpc_tools import protoc

    folder = Path(folder)
    with zipfile.ZipFile(frontend_jar()) as jar:
        for name in (*(f"proto/{p}" for p in PROTOS), *_IMPORTED):
            jar.extract(name, folder)
    bundled = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    for proto in PROTOS:
        args = [f"-I{folder / 'proto'}", f"-I{folder}", f"-I{bundled}", f"--python_out={folder}"]
        if protoc.main(["protoc", *args, f"--grpc_python_out={folder}", str(folder / "proto" / proto)]) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    sys.path.insert(0, str(folder))  # the generated modules import each other by their bare names
    try:
        modules = [
            importlib.import_module(f"{proto[: -len('.proto')]}{suffix}")
            for proto in PROTOS
            for suffix in ("_pb2_grpc", "_pb2")
        ]
    finally:
        sys.path.remove(str(folder))
    return Stubs(*modules)


def bearer(key: str | None) -> list[tuple[str, str]]:
    """gRPC call metadata carrying a TorchServe key (none for a keyless server)."""
    return [("authorization", f"Bearer {key}")] if key else []
