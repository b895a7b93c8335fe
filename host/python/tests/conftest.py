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

    def __init__(self, password: str | None = None, tls: bool = False) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (tests/run-all.sh installs it)")
        self.port = free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="ricochet-redis-")
        self.tls = tls
        self.ca_file = None
        if tls:
            self.ca_file = make_certificates(self.dir)
            ports = ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", os.path.join(self.dir, "server.crt"),
                     "--tls-key-file", os.path.join(self.dir, "server.key"),
                     "--tls-ca-cert-file", self.ca_file, "--tls-auth-clients", "no"]
        else:
            ports = ["--port", str(self.port)]
        args = [exe, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir]
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
        scheme = "rediss" if self.tls else "redis"
        if self.password:
            return f"{scheme}://:{self.password}@127.0.0.1:{self.port}/0"
        return f"{scheme}://127.0.0.1:{self.port}/0"

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
        if self.tls:
            cmd += ["--tls", "--cacert", self.ca_file]
        if self.password:
            cmd += ["-a", self.password, "--no-auth-warning"]
        return subprocess.run(cmd + list(args), capture_output=True, text=True, check=True).stdout


def make_certificates(directory: str) -> str:
    """A CA and a server certificate for 127.0.0.1 (openssl CLI); returns the CA file."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (tests/run-all.sh installs it)")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
        "-subj", "/CN=ricochet python test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-out", "server.crt", "-extfile", "server.ext")
    return os.path.join(directory, "ca.crt")


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
