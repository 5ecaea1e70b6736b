"""A manifest's container spec as container-engine `run` flags: what the kubelet would start.

Used by `make deploy-check` (harness/container.py) for the rendered CPU Deployment and for KServe's
ServingRuntime with the InferenceService's resources merged in, as KServe's controller merges them.
"""

from __future__ import annotations

# TorchServe's gRPC inference port in the image's config (config.properties, grpc_inference_port).
GRPC_PORT = 7070
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts a storageUri's files


def run_flags(
    container: dict, pod_security: dict, volumes: list[dict], engine_name: str, resources: dict | None = None
) -> list[str]:
    """User, read-only root, capabilities, emptyDirs as tmpfs, environment, CPU and memory limits."""
    security = container.get("securityContext", {})
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    group = security.get("runAsGroup", pod_security.get("runAsGroup", user))
    flags = ["--user", f"{user}:{group}"] if user is not None else []
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if "ALL" in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", "ALL"]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    # An emptyDir is writable by the pod's user: docker honours mode=1777 on a tmpfs; podman 4.3
    # gives it the image folder's owner and mode instead, and `U` makes it the container user's.
    writable = "U" if engine_name == "podman" else "mode=1777"
    empty_dirs = {v["name"] for v in volumes if "emptyDir" in v}
    for mount in container.get("volumeMounts", []):
        if mount["name"] in empty_dirs:
            flags += ["--tmpfs", f"{mount['mountPath']}:rw,exec,{writable}"]
    for env in container.get("env", []):
        flags += ["-e", f"{env['name']}={env['value']}"]
    limits = (resources if resources is not None else container.get("resources", {})).get("limits", {})
    if "cpu" in limits:
        flags += ["--cpus", str(limits["cpu"])]
    if "memory" in limits:
        flags += ["--memory", limits["memory"].replace("Gi", "g").replace("Mi", "m")]
    return flags


def image_and_command(container: dict) -> list[str]:
    """The image, then the command and args (the image has no ENTRYPOINT: `command` replaces its CMD)."""
    return [container["image"], *container.get("command", []), *container.get("args", [])]


def deployment_run_args(deployment: dict, engine_name: str) -> tuple[list[str], list[str], dict]:
    """`run` flags and command for a Deployment's pod spec, and the pod and container specs."""
    pod = deployment["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    flags = run_flags(spec, pod.get("securityContext", {}), pod.get("volumes", []), engine_name)
    return flags, image_and_command(spec), {"pod": pod, "container": spec}


def kserve_run_args(runtime: dict, isvc: dict, engine_name: str) -> tuple[list[str], list[str], dict[str, int]]:
    """`run` flags and command for the ServingRuntime's container as KServe starts it for the
    InferenceService (its model's resources over the runtime's), and the ports it serves in the pod:
    the routed one (the container's first port), management (--management-port), metrics (the
    runtime's Prometheus annotation) and gRPC (the image's config)."""
    (container,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    predictor = isvc["spec"]["predictor"]
    resources = {**container.get("resources", {}), **predictor["model"].get("resources", {})}
    flags = run_flags(
        container, predictor.get("securityContext", {}), runtime["spec"].get("volumes", []), engine_name, resources
    )
    args = container.get("args", [])
    ports = {
        "inference": container["ports"][0]["containerPort"],
        "management": int(args[args.index("--management-port") + 1]),
        "metrics": int(runtime["spec"]["annotations"]["prometheus.kserve.io/port"]),
        "grpc": GRPC_PORT,
    }
    return flags, image_and_command(container), ports
