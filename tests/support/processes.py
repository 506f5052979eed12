"""The repository's root (REPO), and real server processes for integration tests: started on a
given port, waited for until healthy, stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]  # tests/support/ is two levels down
VENV_BIN = Path(sys.executable).parent


class ServerProcess:
    """A real server process: start it, wait for its health URL, stop it (terminate, then kill)."""

    def __init__(self, argv: list[str], port: int, env: dict | None = None,
                 health_path: str = "/health", cwd: Path = REPO):
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.health_path = health_path
        # A path on this server, or a whole URL (a proxy is healthy when its metrics port answers).
        self.health_url = health_path if "://" in health_path else self.url + health_path
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)

    def start(self, timeout: float = 120.0, wait_ready: bool = True) -> "ServerProcess":
        """Start the process and, unless told not to, wait until health answers 200."""
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait_ready:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Poll the health URL until 200; fail early with the log if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.health_url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not healthy after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        """Everything the process has printed so far."""
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def exited(self, timeout: float) -> bool:
        """Whether the process ends within timeout seconds."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def signal(self, sig: int) -> None:
        """Send a signal to the server's main process."""
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL the whole process group if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
