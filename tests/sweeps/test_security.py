"""pytest tests/sweeps/test_security.py — safe by default: no telemetry in the driver or in Ray's workers, and a local
sweep's Ray cluster refuses a client that lacks the session's token (Ray 2.60 binds to every interface).
"""
from __future__ import annotations

import ipaddress
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, SWEEP
from trainer.telemetry import TELEMETRY_OFF

# Starts Ray exactly as a local sweep does, reports what a worker sees, then waits for stdin to close.
RAY_LIKE_A_SWEEP = """
import json, os, sys, types
import sweeps.engine.launch as launch
import ray
from trainer.telemetry import TELEMETRY_OFF
launch._start_ray(types.SimpleNamespace(address=None, gpus_per_trial=0))
seen = ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in TELEMETRY_OFF}).remote())
print(json.dumps({"worker_env": seen, "gcs": ray.get_runtime_context().gcs_address}), flush=True)
sys.stdin.read()
ray.shutdown()
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TELEMETRY_OFF and k != "RAY_AUTH_MODE"}
    return {**env, "PYTHONPATH": str(REPO)}


def _descendants(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {pid}.union(*(_descendants(int(c)) for c in children))


def _listening(pid: int) -> set[str]:
    """The local addresses on which `pid` or its descendants listen (TCP, from /proc: no ss or psutil needed)."""
    inodes = set()
    for p in _descendants(pid):
        for fd in Path(f"/proc/{p}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addresses = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                # /proc prints each 32-bit word of the address in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                addresses.add(str(ipaddress.ip_address(words)))
    return addresses


def _read_line(process: subprocess.Popen, timeout_s: float) -> str:
    """The process's next stdout line, or an assertion error after timeout_s (a hung Ray start fails, not hangs)."""
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    assert ready, f"no report within {timeout_s:.0f} s"
    return process.stdout.readline()


@pytest.mark.slow
def test_a_local_sweeps_ray_has_no_telemetry_and_refuses_clients_without_its_token(tmp_path):
    session = subprocess.Popen([sys.executable, "-c", RAY_LIKE_A_SWEEP], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=_clean_env(), cwd=tmp_path)
    try:
        report = json.loads(_read_line(session, 180))
        assert report["worker_env"] == TELEMETRY_OFF  # the switches reach the trial workers
        # Ray binds every interface (no loopback-only setting): whoever reaches them must hold the token.
        exposed = {a for a in _listening(session.pid) if not ipaddress.ip_address(a).is_loopback}
        intruder = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address={report['gcs']!r}); print('CONNECTED')"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={**_clean_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-sessions-token"})
        assert "CONNECTED" not in intruder.stdout and intruder.returncode != 0, sorted(exposed)
        assert "token" in (intruder.stdout + intruder.stderr).lower()
    finally:
        session.stdin.close()
        session.wait(timeout=60)


def test_telemetry_switches_respect_a_user_who_opts_in(monkeypatch):
    from trainer.telemetry import disable_telemetry

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    for key in set(TELEMETRY_OFF) - {"MLFLOW_DISABLE_TELEMETRY"}:
        monkeypatch.delenv(key, raising=False)
    assert disable_telemetry() == {**TELEMETRY_OFF, "MLFLOW_DISABLE_TELEMETRY": "false"}


@pytest.mark.slow
def test_a_sweep_joins_a_token_cluster_with_its_token_and_is_refused_without(tmp_path, tiny_corpus):
    """`ray start --head` on 127.0.0.1 with token auth; the sweep joins with --address and the cluster's token,
    and the same command without any token stops in one line that names the fix (exit 2)."""
    import secrets
    import socket


    token = tmp_path / "cluster_token"
    token.write_text(secrets.token_hex(32))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "home"  # no ~/.ray/auth_token of this user's own local sweeps
    home.mkdir()
    env = {**_clean_env(), "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    ray_bin = [sys.executable, "-m", "ray.scripts.scripts"]
    started = subprocess.run([*ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                              "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                             env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    flags = ["--preset", "smoke", "--data", str(tiny_corpus), "--tokenizer", "bpe:300", "--finetune-train", "none",
             "--num-samples", "1", "--scheduler", "fifo", "--address", f"127.0.0.1:{port}"]
    try:
        joined = subprocess.run(SWEEP + flags, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert joined.returncode == 0, joined.stdout[-2000:] + joined.stderr[-2000:]
        tokenless = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        refused = subprocess.run(SWEEP + flags + ["--experiment", "refused"], env=tokenless, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)
        lines = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-3000:]
        assert "RAY_AUTH_TOKEN" in lines[0]
    finally:
        subprocess.run([*ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
