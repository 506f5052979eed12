#!/usr/bin/env python3
"""Aggregate throughput of one API replica against several behind the nginx edge.

For each replica count k up to --replicas, starts k API servers on the real model (gunicorn,
free loopback ports) that split the machine's cores between them: each pinned to its own share
of the cores with as many torch threads (CPU_THREADS), since replicas whose threads compete
for the same cores starve each other. One nginx edge per k (deploy/nginx/nginx.conf.template,
its internal server in front of that group) is a target; scripts/benchmark_serving.py then
runs the targets side by side: "1 replica", "2 replicas", ... with --concurrency requests in
flight for each. Idle groups cost nothing while another is measured. Needs nginx on the PATH.

    .venv/bin/python scripts/benchmark_replicas.py --replicas 2 --workload mixed --rounds 2
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from render_nginx import render, server_lines

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(port: int, max_users: int, cores: list[int]) -> subprocess.Popen:
    """A real-model API server on the port, on these cores only, in a process group of its own."""
    env = {**os.environ, "SERVICE_PORT": str(port), "MOCK_MODEL": "0",
           "MAX_USERS": str(max_users), "CPU_THREADS": str(len(cores))}
    return subprocess.Popen([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, cores))


def core_shares(cores: list[int], k: int) -> list[list[int]]:
    """The cores split into k shares as even as they go (a share of one core when too few)."""
    if k >= len(cores):
        return [[cores[i % len(cores)]] for i in range(k)]
    size = len(cores) // k
    return [cores[i * size:(i + 1) * size] for i in range(k)]


def wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy in {timeout:.0f} s")


def start_edge(replicas: list[int], prefix: Path) -> tuple[subprocess.Popen, int]:
    """nginx whose internal server spreads requests over the replicas' ports."""
    internal = free_port()
    prefix.mkdir()
    prefix.chmod(0o755)  # under root nginx's workers run as nobody
    conf = prefix / "nginx.conf"
    conf.write_text(render({
        "PUBLIC_PORT": f"127.0.0.1:{free_port()}", "PROXY_UPSTREAM": f"127.0.0.1:{free_port()}",
        "INTERNAL_PORT": f"127.0.0.1:{internal}",
        "API_UPSTREAM_SERVERS": server_lines([f"127.0.0.1:{p}" for p in replicas])}))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return proc, internal


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--max-users", type=int, default=32, help="rows of each replica")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workload", default="mixed")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    # Stopped from outside too, the servers it started are stopped (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cores = sorted(os.sched_getaffinity(0))
    groups = {k: [free_port() for _ in range(k)] for k in range(1, args.replicas + 1)}
    procs, folder = [], Path(tempfile.mkdtemp(prefix="replicas-"))
    try:
        for k, ports in groups.items():
            for port, share in zip(ports, core_shares(cores, k)):
                procs.append(start_api(port, args.max_users, share))
        for port in (p for ports in groups.values() for p in ports):
            wait_healthy(f"http://127.0.0.1:{port}", 900)
        targets = []
        for k, ports in groups.items():
            edge, internal = start_edge(ports, folder / f"edge{k}")
            procs.append(edge)
            url = f"http://127.0.0.1:{internal}"
            wait_healthy(url, 30)
            targets += ["--target", f"{k} replica{'s' if k > 1 else ''}={url}"]
        print(f"up to {args.replicas} replicas of {args.max_users} rows sharing {len(cores)} "
              f"cores", flush=True)
        return subprocess.call([sys.executable, str(REPO / "scripts" / "benchmark_serving.py"),
                                *targets, "--workload", args.workload, "--rounds",
                                str(args.rounds), "--concurrency", str(args.concurrency)])
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
