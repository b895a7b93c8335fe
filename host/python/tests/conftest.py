"""Fixtures on real parts: redis-server processes on free ports, aiohttp servers on loopback,
and the `ricochet` binary of this workspace (RICOCHET_BIN, set by test.sh)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of our own on a free port; killed on teardown."""

    def __init__(self, password: str | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (tests/run-all.sh installs it)")
        self.port = free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="ricochet-redis-")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        pytest.fail("redis-server did not start")

    @property
    def url(self) -> str:
        if self.password:
            return f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        return f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args: str) -> str:
        cmd = ["redis-cli", "-p", str(self.port)]
        if self.password:
            cmd += ["-a", self.password, "--no-auth-warning"]
        return subprocess.run(cmd + list(args), capture_output=True, text=True, check=True).stdout


@pytest.fixture
def redis_server():
    server = RedisServer()
    yield server
    server.kill()


@pytest.fixture
def redis_server_factory():
    servers: list[RedisServer] = []

    def make(**kw) -> RedisServer:
        s = RedisServer(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.kill()


@pytest.fixture(scope="session")
def ricochet_bin() -> str:
    path = os.environ.get("RICOCHET_BIN")
    candidates = [path] if path else []
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    candidates += [os.path.join(target, "debug", "ricochet"), os.path.join(target, "release", "ricochet")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    pytest.fail("the ricochet binary is not built: run host/python/test.sh (or set RICOCHET_BIN)")
