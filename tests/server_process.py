"""Start the real server (``python ws_server.py``) as a subprocess for tests and benchmarks.

Example::

    with ServerProcess(env={"WF_ENABLE_PUBLISH": "1"}) as server:
        print(server.ws_url, server.health()["frameLoop"]["frameNumber"])
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago on the loopback interface."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """A real server on a free loopback port; ``stop()`` and ``start()`` keep the port."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        port: int | None = None,
        host: str = LOOPBACK,
        startup_timeout: float = 20.0,
        prefix: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.env = dict(env or {})
        self.args = list(args)
        self.prefix = list(prefix)  # a command to run the server under, e.g. setpriv
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="wf-server-", suffix=".log", delete=False)

    # -- addresses ----------------------------------------------------------

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.netloc}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.netloc}/ws"

    @property
    def origin(self) -> str:
        """The server's own page origin (allowed by the Origin check)."""
        return self.http_url

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> ServerProcess:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("already running")
        # Persistence off, the simulator and Mid-Tier, unless a test asks otherwise: tests never touch the
        # user's data directory, most need the simulator's deterministic timeline and no model, and a
        # council of two fits the tier on any machine (tests of tier detection ask for WF_TIER=auto).
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "WF_PERSIST": "0",
            "WF_SOURCE": "sim",
            "WF_TIER": "Mid-Tier",
            **self.env,
        }
        command = [
            *self.prefix,
            sys.executable,
            str(ROOT / "ws_server.py"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                self.health(timeout=0.5)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server did not answer /health within {self.startup_timeout} s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the server and wait for it to exit; returns its exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            raise

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop()
        finally:
            self._log.close()

    # -- inspection ---------------------------------------------------------

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        with urllib.request.urlopen(self.http_url + "/health", timeout=timeout) as response:
            return json.loads(response.read())

    def publish(
        self, messages: Sequence[Mapping[str, Any]] | Mapping[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """POST /publish (the server must run with WF_ENABLE_PUBLISH=1)."""
        request = urllib.request.Request(
            self.http_url + "/publish",
            data=json.dumps(messages).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def rss_kib(self) -> int:
        """The server process's resident memory (VmRSS), KiB."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def log_text(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")
