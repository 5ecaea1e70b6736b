"""TorchServe's config.properties as a dict: the one reader and writer of that format, for the
entry point, the /mnt/models layout, the test harness's servers and the demo."""

from __future__ import annotations

from pathlib import Path

from ops.paths import ROOT


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def write_properties(path: Path, props: dict[str, str], header: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((f"# {header}\n" if header else "") + "".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def max_request_size(config: Path = ROOT / "config.properties") -> int:
    """TorchServe's max_request_size: the largest request body (REST) and message (gRPC) it takes."""
    return int(read_properties(config).get("max_request_size", 6553500))  # TorchServe's default
