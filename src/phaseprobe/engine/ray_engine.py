"""The Ray engine: the units of a sweep (or of every cell of a spec grid) run as Ray tasks.

How work flows
--------------
* Each unit of any experiment kind (:mod:`phaseprobe.experiment`; for a sweep, a chunk of the
  grid trained as ONE vectorised ensemble) is one Ray task with ``num_cpus`` = ``cpus_per_task`` and ``max_retries``.
* The dataset is put into the object store once per distinct dataset (``ray.put``) and every
  task gets a reference to it. A worker process builds the
  kind's context (device data, compiled trainer) the first time
  it sees a (kind, spec hash, dataset) triple and keeps it in a module-level cache, so the trainer
  compiles once per worker process, not once per task.
* Workers are processes the raylet starts (not forks of the driver), so JAX starts clean in
  each; ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` is set in the tasks' runtime environment so
  workers sharing a GPU do not each grab most of its memory.
* A task is a *streaming generator*: it yields ``(piece, records, params)`` for every piece it
  finishes -- one for a cold unit, one per alpha step for a chain unit -- while the next piece
  is being computed. The driver waits on all running tasks at once (``ray.wait``) and appends
  each piece to the store the moment it arrives, then reports progress. So a chain's finished
  steps are in the store even if the driver dies before the chain ends.
* The driver passes each task the pieces of its unit that are already in the store and, for a
  chain that stopped half-way, the parameters of the last finished step: a restarted driver
  recomputes only what is missing (the run store is the single source of truth for resuming).

Fault tolerance
---------------
* A worker killed mid-task: Ray retries the task (``max_retries``, system failures only; a
  Python exception inside a task is not retried, it is reported). The retry starts again from
  what the task was given (for a chain: the resume point at submission), recomputing the same
  numbers; Ray does not redeliver items of a streaming task that were already received, and
  the driver also skips any piece it has already written in this run, so nothing is written
  twice. A unit that still fails after its retries is reported after the other units have been
  drained into the store; rerunning the command resumes it.
* The driver killed: every written piece is an atomically renamed file, so rerunning the same
  command resumes from the store (as with the local engine).

Numbers are the same as with the local engine: keys derive from seeds and grid indices only,
and a worker runs exactly the kind's ``run_unit``.

Addresses
---------
``auto`` (the cluster in ``RAY_ADDRESS`` or the last one started on this machine with
``ray start``), ``HOST:PORT`` (a cluster's GCS address) or ``local`` (start a private Ray
instance in this process, ``num_cpus`` workers). The GCS port is probed with a plain socket
connect before ``ray.init``, so an address that does not answer is a one-line error before
any compute. An address on the loopback interface (127.0.0.1, localhost) keeps the driver on
loopback too: such a cluster is one started bound to loopback (see :class:`LocalCluster`).
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import socket
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

from phaseprobe.errors import PhaseprobeError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps a node's address on loopback
WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


class EngineError(PhaseprobeError):
    """An engine that cannot run as asked (address, installation, empty work)."""


def _ray():
    try:
        import ray
    except ModuleNotFoundError as e:  # pragma: no cover -- depends on the installation
        if e.name == "ray":
            raise EngineError("engine: Ray is not installed; pip install 'phaseprobe[ray]' (ray) or use --engine local") from None
        raise
    return ray


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _keep_on_loopback() -> None:
    """Make Ray keep loopback addresses as they are (it otherwise rewrites 127.0.0.1 to the
    machine's routable address, which a loopback-bound cluster does not listen on)."""
    os.environ[_LOOPBACK_ENV] = "0"
    if "ray" in sys.modules:
        try:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
        except Exception:  # noqa: BLE001 -- a Ray without this switch: nothing to do
            pass


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) -> (host, port); a one-line error otherwise."""
    a = str(address).strip()
    for prefix in ("ray://", "gcs://"):
        if a.startswith(prefix):
            a = a[len(prefix):]
    host, sep, port = a.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise EngineError(f"address: cannot read '{address}'; give auto, local or HOST:PORT (e.g. 127.0.0.1:6379)")
    return host, int(port)


def resolve_address(address: str, temp_dir: str | None = None) -> str:
    """The ``HOST:PORT`` that ``auto`` stands for (RAY_ADDRESS, then the last ``ray start`` on
    this machine), or ``address`` itself; a one-line error when there is none."""
    if address != "auto":
        return address
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env
    ray = _ray()
    found = None
    try:
        from ray._private.services import find_bootstrap_address, find_gcs_addresses

        found = find_bootstrap_address(temp_dir)
        if found is None:
            gcs = find_gcs_addresses()
            found = next(iter(gcs)) if gcs else None
    except ImportError:  # pragma: no cover -- a Ray that moved these helpers: read the file
        base = temp_dir or os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray")
        p = Path(base) / "ray_current_cluster"
        found = p.read_text().strip() if p.exists() else None
    del ray
    if not found:
        raise EngineError("address: 'auto' found no Ray cluster on this machine; start one with `ray start --head`, "
                          "give --address HOST:PORT, or use --address local")
    return found


def probe_address(address: str, timeout: float = 2.0) -> tuple[str, int]:
    """Connect to the GCS port once (``timeout`` seconds); a one-line error when nothing answers."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            speaks_grpc = _answers_http2(sock, timeout)
    except OSError as e:
        why = "timed out" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__).lower()
        raise EngineError(f"address: no Ray cluster answers at {host}:{port} ({why}); start one there "
                          f"(`ray start --head --port {port}`), check --address, or use --address local") from None
    if not speaks_grpc:
        raise EngineError(f"address: {host}:{port} answers but is not a Ray cluster (its GCS speaks gRPC, this port "
                          f"does not); give the GCS address printed by `ray start --head`, or use --address local")
    return host, port


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _answers_http2(sock: socket.socket, timeout: float) -> bool:
    """Whether the server on ``sock`` answers an HTTP/2 client preface with a SETTINGS frame,
    as every gRPC server (Ray's GCS) does, within ``timeout`` seconds. A port that accepts
    the connection but is something else (or silent) is refused here instead of leaving
    ``ray.init`` to retry forever."""
    try:
        sock.settimeout(timeout)
        sock.sendall(_HTTP2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:
        return False
    return head[3] == 0x04  # frame type SETTINGS


# ---- worker side ---------------------------------------------------------------------------

_CONTEXTS: "collections.OrderedDict[tuple, object]" = collections.OrderedDict()
_CONTEXT_CACHE_SIZE = 4
_END = object()


def dataset_fingerprint(dataset) -> str:
    """A digest of a dataset's arrays and labels (the key of a worker's context cache)."""
    import hashlib

    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    h.update(repr((dataset.name, dataset.n_classes, dataset.task, dataset.classes)).encode())
    for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        a = np.ascontiguousarray(a)
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(memoryview(a).cast("B") if a.size else b"")  # an empty test set has no bytes to view
    return h.hexdigest()


def _worker_context(kind_name: str, spec_dict: dict, data_box: list):
    """The context of (kind, spec, dataset), built once per worker process (LRU of a few)."""
    from phaseprobe.experiment import get_kind

    kind = get_kind(kind_name)
    spec = kind.spec_type(**spec_dict)
    fingerprint, data_ref = data_box
    key = (kind_name, spec.hash(), fingerprint)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ray = _ray()
        ctx = kind.make_context(spec, dataset=ray.get(data_ref))
        _CONTEXTS[key] = ctx
        while len(_CONTEXTS) > _CONTEXT_CACHE_SIZE:
            _CONTEXTS.popitem(last=False)
    else:
        _CONTEXTS.move_to_end(key)
    return kind, ctx


def unit_task(kind_name: str, spec_dict: dict, data_box: list, unit, done: Sequence[str], resume: dict | None,
              trace_dir: str | None = None):
    """Run one unit of any experiment kind on a worker; yield ``(piece, records, arrays)`` per
    finished piece.

    ``data_box`` is ``[fingerprint, ObjectRef]`` (boxed, so the worker fetches the data only
    when its context cache misses: the same spec on the same data reuses the compiled trainer
    across tasks and runs). ``resume`` maps pieces the unit reads (the chain piece to resume
    from, the pieces of earlier phases it ``needs``) to their arrays.
    ``trace_dir``: append ``"<unit> <pid>"`` to ``tasks.log`` there when the task starts
    (which worker process runs which unit; used to inspect or stop a worker).
    """
    if trace_dir:
        fd = os.open(os.path.join(trace_dir, "tasks.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{unit.uid} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
    kind, ctx = _worker_context(kind_name, spec_dict, data_box)
    q: queue.Queue = queue.Queue()

    def load_params(piece):
        if not resume or piece not in resume:
            raise RuntimeError(f"unit {unit.uid}: no arrays passed for piece {piece}")
        return resume[piece]

    def work():
        try:
            kind.run_unit(ctx, unit, set(done), lambda p, df, params: q.put((p, df, params)), load_params)
        except BaseException as e:  # noqa: BLE001 -- handed to the generator, re-raised there
            q.put(e)
        else:
            q.put(_END)

    t = threading.Thread(target=work, name=f"unit-{unit.uid}", daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is _END:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()


# ---- driver side ---------------------------------------------------------------------------

class RayEngine:
    """Run units as Ray tasks and stream their pieces into the store (see the module doc).

    ``address``: ``auto``, ``HOST:PORT`` or ``local``. ``num_cpus``: workers of a ``local``
    instance. ``cpus_per_task``: CPUs Ray reserves per unit. ``max_retries``: retries of a
    task whose worker died. ``probe_timeout``: seconds to wait for the GCS port. ``trace_dir``:
    a folder where each task logs ``"<unit> <pid>"`` when it starts. ``runtime_env``: extra
    Ray runtime environment for the tasks (``env_vars`` are merged with ours).
    """

    name = "ray"

    def __init__(self, address: str = "auto", num_cpus: int | None = None, cpus_per_task: float = 1,
                 max_retries: int = 3, probe_timeout: float = 2.0, trace_dir: str | Path | None = None,
                 runtime_env: dict | None = None, temp_dir: str | None = None):
        _ray()  # a clear error now when Ray is missing
        self.address = (address or "auto").strip()
        self.num_cpus = num_cpus
        self.cpus_per_task = cpus_per_task
        self.max_retries = int(max_retries)
        self.trace_dir = str(trace_dir) if trace_dir else None
        self.temp_dir = temp_dir
        env = dict(runtime_env or {})
        env["env_vars"] = {**WORKER_ENV, **env.get("env_vars", {})}
        self.runtime_env = env
        if self.address == "local":
            self.resolved = None
            _keep_on_loopback()
        else:
            self.resolved = resolve_address(self.address, temp_dir)
            host, _ = probe_address(self.resolved, probe_timeout)
            if _is_loopback(host):
                _keep_on_loopback()
        self.stats = {"written": 0, "duplicates_skipped": 0, "tasks": 0}

    # -- connection --
    def _connect(self) -> bool:
        """ray.init unless this process is already connected; True when we connected."""
        ray = _ray()
        if ray.is_initialized():
            return False
        kw = dict(log_to_driver=False, logging_level=logging.WARNING)
        if self.resolved is None:
            # a private instance on loopback for this command only: no token file is written to
            # ~/.ray (Ray would otherwise create one, and every later `ray start` on this machine
            # would then demand it); set RAY_AUTH_MODE=token to keep Ray's token authentication
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(num_cpus=self.num_cpus, _node_ip_address="127.0.0.1", include_dashboard=False, **kw)
            return True
        host, _ = parse_address(self.resolved)
        if _is_loopback(host):
            kw["_node_ip_address"] = "127.0.0.1"
        try:
            ray.init(address=self.resolved, **kw)
        except (ConnectionError, ray.exceptions.RayError) as e:
            auth = "auth" in type(e).__name__.lower() or "auth" in str(e).lower()
            why = ("it asks for an authentication token; set RAY_AUTH_MODE=token and give the cluster's token "
                   "(~/.ray/auth_token or RAY_AUTH_TOKEN)") if auth else "check that it is a Ray cluster's GCS address"
            raise EngineError(f"address: cannot connect to the Ray cluster at {self.resolved}: {why}") from None
        return True

    # -- engine interface --
    def run_units(self, work: Sequence, on_work: Callable[[int], None] | None = None) -> None:
        """Run ``work``, a list of ``(job, units)`` of any experiment kind, as one stream of
        tasks (the engine interface shared with the local engine)."""
        if not any(units for _, units in work):
            return
        ray = _ray()
        owns = self._connect()
        try:
            self._stream(ray, work, on_work)
        finally:
            if owns:
                ray.shutdown()

    def _submit_all(self, ray, work):
        from phaseprobe.experiment import resume_point

        task = ray.remote(unit_task).options(
            num_cpus=self.cpus_per_task, max_retries=self.max_retries, num_returns="streaming",
            runtime_env=self.runtime_env, name="phaseprobe-unit",
        )
        data_refs: dict[int, list] = {}
        pending: dict = {}
        for job, units in work:
            done = job.store.done_pieces(job.kind.needs_params)
            todo = [u for u in units if resume_point(u, done) < len(list(u.pieces))]
            if not todo:
                continue
            if job.dataset is None:
                job.context()
            key = id(job.dataset)
            if key not in data_refs:
                data_refs[key] = [dataset_fingerprint(job.dataset), ray.put(job.dataset)]
            spec_dict = job.spec.model_dump()
            for u in todo:
                pieces = list(u.pieces)
                unit_done = tuple(p for p in pieces if p in done)
                resume = {p: job.store.load_params(p) for p in getattr(u, "needs", ())}
                if getattr(u, "chain", False):
                    start = resume_point(u, done)
                    if start > 0:
                        prev = pieces[start - 1]
                        resume[prev] = job.store.load_params(prev)
                gen = task.remote(job.kind.name, spec_dict, data_refs[key], u, unit_done, resume or None, self.trace_dir)
                pending[gen] = (job, u, set())  # pieces written from this task in this run
                self.stats["tasks"] += 1
        return pending

    def _stream(self, ray, work, on_work):
        pending = self._submit_all(ray, work)
        failures: list[str] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for gen in ready:
                job, unit, written = pending[gen]
                try:
                    ref = next(gen)
                    piece, df, params = ray.get(ref)
                except StopIteration:
                    del pending[gen]
                    continue
                except ray.exceptions.RayError as e:
                    failures.append(f"{job.store.root.name}/{unit.uid}: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
                    del pending[gen]
                    continue
                if piece in written:
                    self.stats["duplicates_skipped"] += 1
                    continue
                job.store.write_piece(piece, df, params)
                written.add(piece)
                self.stats["written"] += 1
                if on_work:
                    on_work(int(unit.runs_per_piece))
        if failures:
            raise RuntimeError(f"{len(failures)} unit(s) failed after {self.max_retries} retries "
                               f"(finished pieces are in the store; rerun the same command to resume): " + "; ".join(failures))
