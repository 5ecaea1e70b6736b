"""`mnist-digit` (`python -m mnist_digit_client`): options, then against a gateway and a real TorchServe."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from harness.samples import not_one_digit_samples
from mnist_digit_client.cli import parse_args
from tests.client_helpers import Gateway
from tests.conftest import FIXTURES, ROOT

FILES = [str(FIXTURES / name) for name in ("seven.png", "paper_seven.jpg", "canvas_seven.png")]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_digit_client", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_options_for_keyless_servers_gateways_and_routes():
    args = parse_args(["health", "--no-token", "--header", "X-Gateway: yes", "--header", "X-Team:a:b", "--route", "v2"])
    assert args.no_token and args.header == [("X-Gateway", "yes"), ("X-Team", "a:b")] and args.route == "v2"
    assert parse_args(["health"]).token_file == "key_file.json"
    for wrong in (["--header", "no colon"], ["--route", "v3"], ["--no-token", "--token-file", "k.json"]):
        with pytest.raises(SystemExit) as caught:
            parse_args(["health", *wrong])
        assert caught.value.code == 2


def test_without_a_key_file_it_is_a_usage_error(tmp_path):
    result = run_cli("health", "--token-file", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "--token-file" in result.stderr and "--no-token" in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("keyless", [["--no-token"], ["--token-file", ""]])
def test_a_keyless_gateway_with_its_own_header_over_v1(server, tmp_path, keyless):
    if not shutil.which("nginx"):
        pytest.skip("nginx is missing: `make gateway` installs it (as root)")
    gateway = Gateway(server, tmp_path, required={"X-Gateway": "yes"})
    try:
        result = run_cli(
            "predict", FILES[0], "--url", gateway.url, "--route", "v1", "--header", "X-Gateway: yes", *keyless
        )
    finally:
        gateway.stop()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digit"] == 7 and gateway.seen()[0]["authorization"] == ""


@pytest.mark.integration
def test_cli_prints_one_line_per_file_and_fails_when_one_did(server, tmp_path):
    options = ["--url", server.inference, "--token-file", str(server.root / "key_file.json")]
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not an image")

    ok = run_cli("predict", *FILES, *options, "--route", "v1")
    assert ok.returncode == 0, ok.stderr
    lines = [json.loads(line) for line in ok.stdout.splitlines()]
    assert sorted(line["file"] for line in lines) == sorted(FILES)
    assert all(line["digit"] == 7 and 0 < line["confidence"] <= 1 for line in lines)

    letter = tmp_path / "letter.png"
    letter.write_bytes(not_one_digit_samples()["letter"][0])
    failed = run_cli("predict", FILES[0], str(not_an_image), str(letter), *options, "--concurrency", "1")
    assert failed.returncode == 1
    lines = {line["file"]: line for line in map(json.loads, failed.stdout.splitlines())}
    assert lines[FILES[0]]["digit"] == 7
    assert lines[str(not_an_image)]["code"] == 415 and lines[str(not_an_image)]["error"]
    assert lines[str(letter)] == {
        "file": str(letter),
        "code": 422,
        "reason": "not_a_digit",
        "error": lines[str(letter)]["error"],
    }

    health = run_cli("health", *options)
    assert health.returncode == 0 and json.loads(health.stdout) == {"status": "Healthy"}
