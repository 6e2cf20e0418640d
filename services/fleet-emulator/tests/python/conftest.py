"""Starts the fleet-emulator binary (FLEET_EMULATOR_BIN) on a free port with fleet.yaml, for boto3 to talk to."""

import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import pytest

HERE = pathlib.Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def endpoint():
    binary = os.environ.get("FLEET_EMULATOR_BIN")
    if not binary:
        pytest.fail("set FLEET_EMULATOR_BIN to the fleet-emulator binary (tests/run.sh does)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--fleet", str(HERE / "fleet.yaml"), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/_emulator/health", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode())
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture()
def admin(endpoint):
    """POST/DELETE to the admin API; faults are cleared after each test."""

    def call(method: str, path: str, body: bytes = b""):
        req = urllib.request.Request(f"{endpoint}/_emulator{path}", data=body or None, method=method)
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()

    yield call
    call("DELETE", "/faults")
