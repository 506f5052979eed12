#!/usr/bin/env python3
"""`make test-docker`: the compose stacks on a real Docker engine, end to end.

Starts dockerd if none answers, picks a base image (python:3.11-slim when it is present or can
be pulled, else a Debian bookworm image made here with debootstrap and imported, kept for the
next run), builds the images with compose, then brings up the mock stack and the production
stack in turn and checks through the published port: /health, a streamed answer with a token
made by `compose exec proxy python scripts/jwt_util.py`, 401 without a token, that only the
edge publishes a port, scale-out to two API replicas that both take requests (production), and
that `down` leaves no container or network behind. One PASS or FAIL line per check, the time
of each phase, and exit status 1 if any check failed.

Runs as root (dockerd, debootstrap). Not part of `make test`: it needs a Docker engine, and the
first build takes minutes (torch).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
OFFICIAL_BASE = "python:3.11-slim"
LOCAL_BASE = "inference-api-base:bookworm"
MODEL = "SmolLM2-135M-Instruct"
PROJECT = "inference-api-smoke"
MOCK_FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.mock.yml"]
PROD_FILES = ["-f", "docker-compose.yml"]

results: list[tuple[str, bool, str]] = []
timings: list[tuple[str, float]] = []


def say(message: str) -> None:
    print(message, flush=True)


def check(name: str, ok: bool, detail: str = "") -> bool:
    results.append((name, ok, detail))
    say(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""))
    return ok


@contextmanager
def phase(name: str):
    start = time.monotonic()
    say(f"---- {name}")
    try:
        yield
    finally:
        took = time.monotonic() - start
        timings.append((name, took))
        say(f"     {name}: {took:.1f} s")


def run(argv: list[str], *, env: dict | None = None, check_rc: bool = True, capture: bool = True,
        timeout: float = 3600, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=REPO, env=env, text=True, input=input, timeout=timeout,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.STDOUT if capture else None)
    if check_rc and result.returncode != 0:
        tail = (result.stdout or "")[-4000:]
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}\n{tail}")
    return result


def quiet_ok(argv: list[str], timeout: float = 60) -> bool:
    try:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# ---------------------------------------------------------------------------------------------
# The engine, compose, the base image and torch


def ensure_engine(log_dir: Path) -> None:
    if quiet_ok(["docker", "info"]):
        say("docker engine: running")
        return
    if not shutil.which("dockerd"):
        raise RuntimeError("no Docker engine answers and there is no dockerd: "
                           "apt-get install docker.io")
    log = log_dir / "dockerd.log"
    say(f"docker engine: starting dockerd (log: {log})")
    subprocess.Popen(["dockerd", "--storage-driver", "overlay2"], stdout=log.open("w"),
                     stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(60):
        if quiet_ok(["docker", "info"]):
            return
        time.sleep(1)
    raise RuntimeError(f"dockerd did not answer within 60 s; see {log}")


def find_compose(wanted: str | None) -> list[str]:
    candidates = [wanted.split()] if wanted else [["docker", "compose"], ["docker-compose"]]
    for argv in candidates:
        if quiet_ok([*argv, "version"]):
            version = run([*argv, "version"]).stdout.splitlines()[0]
            say(f"compose: {' '.join(argv)} ({version.strip()})")
            return argv
    raise RuntimeError("neither `docker compose` nor `docker-compose` works: "
                       "apt-get install docker-compose")


def image_exists(name: str) -> bool:
    return quiet_ok(["docker", "image", "inspect", name])


def ensure_base_image(requested: str | None, log_dir: Path) -> str:
    if requested:
        if not image_exists(requested):
            raise RuntimeError(f"base image {requested} is not present")
        return requested
    if image_exists(OFFICIAL_BASE):
        return OFFICIAL_BASE
    if image_exists(LOCAL_BASE):
        say(f"base image: reusing {LOCAL_BASE}")
        return LOCAL_BASE
    if quiet_ok(["docker", "pull", OFFICIAL_BASE], timeout=600):
        return OFFICIAL_BASE
    say(f"base image: no registry reachable for {OFFICIAL_BASE}; making {LOCAL_BASE}")
    make_base_image(log_dir)
    return LOCAL_BASE


def make_base_image(log_dir: Path) -> None:
    """Debian bookworm (Python 3.11, like python:3.11-slim) with the host's extra CA certificates,
    so pip in the builds trusts what the host's pip trusts."""
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is needed to make a base image: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="docker-base-") as work:
        root = Path(work) / "rootfs"
        log = log_dir / "debootstrap.log"
        with log.open("w") as out:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                 "bookworm", str(root), "http://deb.debian.org/debian"],
                stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed; see {log}")
        # As Debian's own images: no service starts while a package installs in a build.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\n# No service starts while a package installs in an image build.\nexit 101\n")
        policy.chmod(0o755)
        (root / "etc/apt/sources.list").write_text(
            "deb http://deb.debian.org/debian bookworm main\n"
            "deb http://deb.debian.org/debian bookworm-updates main\n"
            "deb http://deb.debian.org/debian-security bookworm-security main\n")
        extra = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        for cert in extra:
            shutil.copy(cert, root / "usr/local/share/ca-certificates" / cert.name)
        if extra:
            run(["chroot", str(root), "update-ca-certificates"])
        # pip's own certificate bundle would not have them; the system bundle does.
        (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        for leftover in [*(root / "var/cache/apt/archives").glob("*.deb"),
                         *(root / "var/lib/apt/lists").glob("*_*")]:
            leftover.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "--change", "ENV LANG=C.UTF-8",
                                   "--change", 'CMD ["/bin/bash"]', "-", LOCAL_BASE],
                                  stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr}")


def torch_pin() -> str:
    pins = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.startswith("torch==")]
    return pins[0]


def torch_wheel() -> Path | None:
    version = torch_pin().split("==")[1]
    wheels = sorted((REPO / "wheels").glob(f"torch-{version}[+-]*cp311*.whl"))
    return wheels[0] if wheels else None


def pick_torch_source(requested: str | None) -> str:
    """wheels when ./wheels holds the pinned torch, else PyTorch's index when it answers, else a
    CPU wheel that the host's pip can find (its configured indexes and wheel folders)."""
    if requested:
        return requested
    if torch_wheel():
        return "wheels"
    try:
        requests.head("https://download.pytorch.org/whl/cpu/torch/", timeout=10)
        return "pytorch"
    except requests.RequestException:
        pass
    say("torch: PyTorch's index does not answer; asking the host's pip for the CPU wheel")
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
         "--dest", "wheels", torch_pin()])
    wheel = torch_wheel()
    if not wheel or "+cpu" not in wheel.name:
        raise RuntimeError("no CPU build of torch to be had: put one in ./wheels "
                           f"(found {wheel.name if wheel else 'none'})")
    return "wheels"


# ---------------------------------------------------------------------------------------------
# A stack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    def __init__(self, compose: list[str], files: list[str], env: dict[str, str], label: str):
        self.compose, self.files, self.env, self.label = compose, files, env, label
        self.url = f"http://127.0.0.1:{env['PROXY_PORT']}"

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run([*self.compose, "-p", PROJECT, *self.files, *args], env=self.env, **kwargs)

    def containers(self, service: str) -> list[str]:
        return self("ps", "-q", service).stdout.split()

    def inspect(self, container: str) -> dict:
        return json.loads(run(["docker", "inspect", container]).stdout)[0]

    def wait_healthy(self, service: str, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.containers(service)
            states = [self.inspect(c)["State"].get("Health", {}).get("Status") for c in ids]
            if len(ids) >= count and states.count("healthy") >= count:
                return True
            time.sleep(2)
        return False

    def wait_public_health(self, timeout: float) -> requests.Response | None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = requests.get(f"{self.url}/health", timeout=5)
                if last.status_code == 200:
                    return last
            except requests.RequestException:
                pass
            time.sleep(1)
        return last

    def token(self) -> str:
        claims = json.dumps({"team_id": "smoke", "token_id": self.label})
        result = self("exec", "-T", "proxy", "python", "scripts/jwt_util.py", "encode", claims,
                      "--expires-in", "900", check_rc=False)
        return result.stdout.strip().splitlines()[-1] if result.returncode == 0 else ""

    def stream(self, token: str | None, text: str, max_tokens: int = 16) -> tuple[int, list[str]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with requests.post(f"{self.url}/inference/{MODEL}", json={"text": text, "max_tokens": max_tokens},
                           headers=headers, stream=True, timeout=120) as response:
            chunks = [c.decode("utf-8", "replace") for c in response.iter_content(chunk_size=None)]
            return response.status_code, chunks


def api_port_unpublished(stack: Stack) -> tuple[bool, str]:
    published = {}
    for service in ("inference-api", "proxy", "edge"):
        for container in stack.containers(service):
            ports = stack.inspect(container)["NetworkSettings"]["Ports"] or {}
            bound = sorted(f"{p}->{b[0]['HostPort']}" for p, b in ports.items() if b)
            if bound:
                published[service] = bound
    expected = {"edge": [f"{stack.env['PROXY_PORT']}/tcp->{stack.env['PROXY_PORT']}"]}
    return published == expected, f"published: {published}"


def check_stack(stack: Stack, label: str, health_timeout: float) -> str:
    started = time.monotonic()
    with phase(f"{label}: up (compose returns once the API is healthy)"):
        stack("up", "-d", timeout=900)
    health = stack.wait_public_health(health_timeout)
    took = time.monotonic() - started
    timings.append((f"{label}: healthy through the edge, from `up`", took))
    ok = health is not None and health.status_code == 200
    check(f"{label}: GET /health through the edge is 200", ok,
          (health.text.strip()[:120] if health is not None else "no answer") + f"; {took:.1f} s after `up`")
    edge_ok = stack.wait_healthy("edge", 1, 60)
    check(f"{label}: every container healthy by its own health check", edge_ok and all(
        stack.wait_healthy(service, 1, 1) for service in ("inference-api", "proxy")))
    token = stack.token()
    check(f"{label}: token from `exec proxy python scripts/jwt_util.py encode`", token.count(".") == 2)
    status, chunks = stack.stream(token, "The three primary colors are", 16)
    text = "".join(chunks)
    check(f"{label}: streamed answer with the token", status == 200 and len(chunks) > 1 and text,
          f"status {status}, {len(chunks)} chunks, {text[:60]!r}")
    status, chunks = stack.stream(None, "no token")
    check(f"{label}: 401 without a token", status == 401, f"status {status}")
    ok, detail = api_port_unpublished(stack)
    check(f"{label}: only the edge's public port is published (API and proxy are not)", ok, detail)
    return token


def check_scale_out(stack: Stack, token: str) -> None:
    with phase("production: scale to 2 replicas"):
        stack("up", "-d", "--no-recreate", "--scale", "inference-api=2", timeout=900)
        healthy = stack.wait_healthy("inference-api", 2, 600)
        stack("exec", "-T", "edge", "edge-reload")
    check("production: 2 API replicas healthy", healthy)
    replicas = {}
    for container in stack.containers("inference-api"):
        networks = stack.inspect(container)["NetworkSettings"]["Networks"]
        replicas[next(iter(networks.values()))["IPAddress"]] = container[:12]
    time.sleep(2)  # the reloaded workers take over
    statuses = [stack.stream(token, f"replica check {i}", 4)[0] for i in range(8)]
    edge = stack.containers("edge")[0]
    log = run(["docker", "logs", edge]).stdout
    api_port = stack.env.get("SERVICE_PORT", "7000")
    served = set(re.findall(rf'"POST /inference/{MODEL} HTTP/1\.1" 200 .*?upstream=([\d.]+):{api_port}\b', log))
    check("production: both replicas took requests through the edge",
          all(s == 200 for s in statuses) and set(replicas) <= served,
          f"statuses {statuses}, replicas {sorted(replicas)}, served by {sorted(served)}")


def check_down(stack: Stack, label: str) -> None:
    with phase(f"{label}: down"):
        stack("down", "--volumes", "--remove-orphans", timeout=300)
    label_filter = f"label=com.docker.compose.project={PROJECT}"
    containers = run(["docker", "ps", "-aq", "--filter", label_filter]).stdout.split()
    networks = run(["docker", "network", "ls", "-q", "--filter", label_filter]).stdout.split()
    check(f"{label}: down leaves no container or network", not containers and not networks,
          f"containers {containers}, networks {networks}")


def dump_logs(stack: Stack) -> None:
    result = stack("logs", "--no-color", "--tail", "40", check_rc=False)
    say("---- logs of the failed stack (last 40 lines per service)")
    say(result.stdout)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compose", help='the compose command, e.g. "docker-compose" '
                        '(default: `docker compose`, else `docker-compose`)')
    parser.add_argument("--base-image", help=f"base image for the builds (default: {OFFICIAL_BASE} "
                        f"if present or pullable, else {LOCAL_BASE}, made here if missing)")
    parser.add_argument("--torch-source", choices=["pytorch", "pypi", "wheels"],
                        help="TORCH_SOURCE of the build (default: wheels if ./wheels has the "
                        "pinned torch, else pytorch if its index answers, else the host's pip's CPU wheel)")
    parser.add_argument("--skip-production", action="store_true", help="the mock stack only")
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="docker-smoke-"))
    total = time.monotonic()
    try:
        with phase("engine and base image"):
            ensure_engine(log_dir)
            compose = find_compose(args.compose)
            base = ensure_base_image(args.base_image, log_dir)
            source = pick_torch_source(args.torch_source)
            say(f"base image: {base}; torch source: {source}")
    except (RuntimeError, subprocess.SubprocessError) as err:
        check("engine, compose and base image", False, str(err))
        return 1

    env = {**os.environ, "BASE_IMAGE": base, "TORCH_SOURCE": source, "TORCH_VARIANT": "cpu",
           "JWT_SECRET": secrets.token_hex(32), "PROXY_PORT": str(free_port())}
    stacks = [("mock", Stack(compose, MOCK_FILES, env, "mock"), 120)]
    if not args.skip_production:
        stacks.append(("production", Stack(compose, PROD_FILES, env, "production"), 600))

    for label, stack, _ in stacks:
        try:
            with phase(f"{label}: build"):
                output = stack("build").stdout
            check(f"{label}: images build", True)
            check(f"{label}: no unused build argument",
                  "were not consumed" not in output, "; ".join(
                      line for line in output.splitlines() if "not consumed" in line))
        except (RuntimeError, subprocess.SubprocessError) as err:
            check(f"{label}: images build", False, str(err)[-2000:])
            return summary(total)

    for label, stack, health_timeout in stacks:
        before = len(results)
        try:
            token = check_stack(stack, label, health_timeout)
            if label == "production":
                check_scale_out(stack, token)
        except (RuntimeError, subprocess.SubprocessError, requests.RequestException) as err:
            check(f"{label}: stack ran", False, str(err)[-2000:])
        if any(not ok for _, ok, _ in results[before:]):
            dump_logs(stack)
        check_down(stack, label)
    return summary(total)


def summary(started: float) -> int:
    failed = [name for name, ok, _ in results if not ok]
    say("---- timings")
    for name, took in timings:
        say(f"  {took:7.1f} s  {name}")
    say(f"  {time.monotonic() - started:7.1f} s  total")
    say(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
