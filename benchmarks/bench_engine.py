"""Engine throughput: one cold grid through ``local`` and through ``ray`` with 1 and 2 workers.

Workload: digits (1797 training images, 64 pixels), MLP 64-W-W-10 (W = ``--width``), Adam, full
batch, ``--epochs`` epochs per training, a cold sweep of ``--alphas`` strengths x ``--seeds``
seeds (N trainings). For each chunk size c in ``--chunks`` the grid is cut into ceil(N / c)
units, each one vectorised ensemble of c members: one Ray task per unit.

What is timed: ``engine.run`` of a whole sweep into a fresh run folder, after a warm-up sweep of
the same spec -- steady state, each worker holding its compiled trainer (the local engine
reuses one compiled context). Data loading, compilation and worker start-up are left out (the
warm-up time is printed separately); the driver's store writes and the task round trips are in.
Ray runs on a private head on 127.0.0.1 started with ``--num-cpus`` 1 and 2 (one worker per
CPU, one task per worker). Every configuration is measured ``--repeats`` times per round and
the rounds (``--rounds``) restart the clusters; the table gives the median and the range.

Scaling efficiency at chunk size c = throughput(ray, 2 workers) / (2 x throughput(ray, 1
worker)); the report names the smallest chunk size from which it stays within 10 % of linear
(>= 0.9) for every larger chunk size measured. XLA may use several threads inside one worker;
``--single-thread`` pins each process to one (XLA_FLAGS) so that one worker = one core.

On a shared machine other processes take CPU time: the load average is printed before and
after, and numbers from a loaded machine understate the scaling.

    .venv/bin/python benchmarks/bench_engine.py [--chunks 1,2,4,8,16] [--rounds 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _spec(args, chunk: int):
    from phaseprobe.sweep.spec import make_spec

    return make_spec(dict(
        name=f"bench-engine-c{chunk}", dataset="digits", model="mlp", depth=2, width=args.width, activation="relu",
        alphas=f"1e-4:1:{args.alphas}", mode="cold", seeds=args.seeds, optimizer="adam", lr=3e-3,
        epochs=args.epochs, patience=None, chunk_size=chunk,
    ))


def _timed_sweeps(engine, args, chunk: int, tmp: Path, tag: str, ctx=None) -> tuple[float, list[float]]:
    """(warm-up seconds, [seconds of each measured sweep]) for one engine and chunk size."""
    from phaseprobe.experiment import run_jobs
    from phaseprobe.sweep.driver import prepare_sweep

    spec = _spec(args, chunk)
    times = []
    warm = None
    for i in range(args.repeats + 1):
        job = prepare_sweep(spec, tmp / f"{tag}-c{chunk}-{i}-{time.monotonic_ns()}", ctx=ctx)
        ctx = job.ctx
        t0 = time.perf_counter()
        run_jobs([job], engine=engine)
        job.store.unlock()
        dt = time.perf_counter() - t0
        if warm is None:
            warm = dt
        else:
            times.append(dt)
    return warm, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", default="1,2,4,8,16")
    ap.add_argument("--alphas", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--single-thread", action="store_true", help="one XLA thread per process (XLA_FLAGS)")
    args = ap.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    cache = tmp / "jax-cache"  # one persistent compilation cache for every process: compile once per shape
    env = {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    if args.single_thread:
        env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    os.environ.update(env)  # before jax is imported in this process

    n = args.alphas * args.seeds
    load0 = os.getloadavg()
    print(f"# engine throughput: {n} trainings (digits, MLP 64-{args.width}-{args.width}-10, {args.epochs} epochs full batch), "
          f"{os.cpu_count()} CPUs, load average before {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}"
          f"{', one XLA thread per process' if args.single_thread else ''}", flush=True)
    res: dict[tuple[str, int], list[float]] = {}
    warm: dict[tuple[str, int], list[float]] = {}

    def record(name, c, w, ts):
        res.setdefault((name, c), []).extend(n / t for t in ts)
        warm.setdefault((name, c), []).append(w)
        print(f"  {name:6s} chunk {c:3d}: warm-up {w:6.1f} s, runs/s " + " ".join(f"{n / t:7.1f}" for t in ts), flush=True)

    try:
        _rounds(args, chunks, tmp, env, record)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()
    _report(args, chunks, n, res, warm, load0, load1)


def _rounds(args, chunks, tmp, env, record) -> None:
    import ray

    from phaseprobe.engine.local import LocalEngine
    from phaseprobe.engine.cluster import LocalCluster
    from phaseprobe.engine.ray_engine import RayEngine

    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        eng = LocalEngine()
        for c in chunks:
            w, ts = _timed_sweeps(eng, args, c, tmp, "local")
            record("local", c, w, ts)
        for k in (1, 2):
            with LocalCluster(num_cpus=k, env=env) as cl:
                ray.init(address=cl.address, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="WARNING")
                try:
                    eng = RayEngine(cl.address, runtime_env={"env_vars": env})
                    for c in chunks:
                        w, ts = _timed_sweeps(eng, args, c, tmp, f"ray{k}")
                        record(f"ray{k}", c, w, ts)
                finally:
                    ray.shutdown()


def _report(args, chunks, n, res, warm, load0, load1) -> None:
    def med(name, c):
        v = res[(name, c)]
        return statistics.median(v), min(v), max(v)

    print()
    print(f"| chunk | units | local runs/s | ray 1 worker runs/s | ray 2 workers runs/s | ray1 / local | scaling efficiency ray2 / (2 x ray1) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    eff = {}
    for c in chunks:
        lo, r1, r2 = med("local", c), med("ray1", c), med("ray2", c)
        eff[c] = r2[0] / (2 * r1[0])
        units = -(-n // c)
        print(f"| {c} | {units} | {lo[0]:.1f} ({lo[1]:.1f}-{lo[2]:.1f}) | {r1[0]:.1f} ({r1[1]:.1f}-{r1[2]:.1f}) | "
              f"{r2[0]:.1f} ({r2[1]:.1f}-{r2[2]:.1f}) | {r1[0] / lo[0]:.2f} | {eff[c]:.2f} |")
    print()
    ok = [c for c in chunks if all(eff[d] >= 0.9 for d in chunks if d >= c)]
    if ok:
        print(f"scaling within 10 % of linear (efficiency >= 0.9) from chunk size {min(ok)} up "
              f"(efficiency per chunk: " + ", ".join(f"{c}: {eff[c]:.2f}" for c in chunks) + ")")
    else:
        print("scaling never within 10 % of linear at the chunk sizes measured (efficiency per chunk: "
              + ", ".join(f"{c}: {eff[c]:.2f}" for c in chunks) + ")")
    print(f"load average after: {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f} on {os.cpu_count()} CPUs"
          + ("  -- other processes were using the CPUs: the 2-worker numbers understate the scaling" if max(load0[0], load1[0]) > 1.5 else ""))
    print(f"warm-up (first sweep: worker start, compile or cache load), median s: "
          + ", ".join(f"{k[0]} c{k[1]} {statistics.median(v):.1f}" for k, v in sorted(warm.items())))


if __name__ == "__main__":
    sys.exit(main())
