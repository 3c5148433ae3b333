"""A private Ray cluster on this machine, bound to loopback (tests, benchmarks, a laptop).

``LocalCluster(num_cpus=2)`` starts a Ray head with ``ray start`` on 127.0.0.1 at free ports,
gives its GCS ``address`` for ``RayEngine(address)``, and stops every process of its session on
``stop()`` / context exit. Split from :mod:`phaseprobe.engine.ray_engine` (the engine itself).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from phaseprobe.engine.ray_engine import _LOOPBACK_ENV, _keep_on_loopback


# ---- a private Ray cluster on this machine, bound to loopback --------------------------------

def _free_port_block(n: int = 70) -> int:
    """A base port p with p..p+n-1 all free on 127.0.0.1 (best effort)."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        base = min(base, 65535 - n)
        ok = True
        for p in range(base, base + n):
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", p))
            except OSError:
                ok = False
                break
            finally:
                t.close()
        if ok:
            return base
    raise RuntimeError("no block of free ports on 127.0.0.1")


class LocalCluster:
    """A Ray head node on this machine bound to 127.0.0.1 (``ray start --head --block``),
    for tests, benchmarks and single-machine runs. ``with LocalCluster(num_cpus=2) as c:``
    gives ``c.address``; leaving the block stops every process of the cluster (they share
    the session that ``ray start`` opens) and nothing else. ``env``: extra environment for the
    cluster's processes and workers (e.g. ``JAX_COMPILATION_CACHE_DIR``).
    """

    def __init__(self, num_cpus: int = 2, port: int | None = None, temp_dir: str | None = None,
                 start_timeout: float = 120.0, env: dict | None = None):
        self.num_cpus = int(num_cpus)
        self.env = dict(env or {})
        self.port = port or _free_port_block()
        self.temp_dir = temp_dir
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self._own_temp = False
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> "LocalCluster":
        import tempfile

        if self.temp_dir is None:
            self.temp_dir = tempfile.mkdtemp(prefix="ppray-", dir="/tmp")  # short: Ray's socket paths
            self._own_temp = True
        p = self.port
        ray_bin = str(Path(sys.executable).with_name("ray"))
        cmd = [ray_bin, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(p),
               "--num-cpus", str(self.num_cpus), "--temp-dir", self.temp_dir, "--include-dashboard", "false",
               "--disable-usage-stats", "--dashboard-agent-listen-port", str(p + 2), "--dashboard-agent-grpc-port", str(p + 3),
               "--runtime-env-agent-port", str(p + 4), "--metrics-export-port", str(p + 5), "--node-manager-port", str(p + 6),
               "--object-manager-port", str(p + 7), "--min-worker-port", str(p + 10), "--max-worker-port", str(p + 69)]
        # no token authentication: a loopback-only cluster of this user, and drivers connect without a token
        env = {**os.environ, **self.env, _LOOPBACK_ENV: "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
        self.log = open(Path(self.temp_dir) / "ray-start.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        marker = Path(self.temp_dir) / "ray_current_cluster"
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.start_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}; see {self.log.name}")
            if marker.exists() and "Ray runtime started" in Path(self.log.name).read_text(errors="replace"):
                break
            time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"the Ray head did not start in {self.start_timeout:.0f} s; see {self.log.name}")
        _keep_on_loopback()
        return self

    def _session_pids(self) -> list[int]:
        if self.proc is None:
            return []
        sid = self.proc.pid
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session ...
                out.append(int(d.name))
        return out

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._session_pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            t0 = time.monotonic()
            while self._session_pids() and time.monotonic() - t0 < grace:
                time.sleep(0.2)
            if not self._session_pids():
                break
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        self.proc = None
        if self._own_temp:
            import shutil

            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
