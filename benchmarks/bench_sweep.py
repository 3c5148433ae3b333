"""Throughput of alpha sweeps: a cold sweep and a loop sweep, runs/s and the fraction of sgemm peak.

Fashion-MNIST (10 000 training images by default), MLP 784-256-256-10, Adam, minibatch 64, a few
epochs per training (so the benchmark takes minutes, not hours). 41 strengths x 4 seeds:

* cold: 164 independent trainings, packed into ensembles of ``--chunk`` members (one compiled
  program per ensemble size);
* loop: 4 seeds walk 41 strengths up and back down with warm starts: 82 sequential pieces of a
  4-member ensemble (328 trainings).

The sgemm peak is measured in the same process: a float32 ``jnp.matmul`` of two N x N matrices
(2 N^3 flops). The sweeps' useful work counts the training steps (forward + backward: 6 flops
per weight per example) and the records' full-pass evaluation (train forward + backward, test
forward); biases and activations are left out, so the fraction is a slight underestimate.
Times include compilation, data loading and the store's writes: it is what a user waits for.

    .venv/bin/python benchmarks/bench_sweep.py [--epochs 2] [--n-train 10000] [--chunk 82]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np


def sgemm_peak(n: int = 2048, reps: int = 10) -> float:
    """Measured float32 matmul rate (flop/s): best of ``reps`` timed products after a warm-up."""
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def weight_count(in_dim: int, width: int, depth: int, out_dim: int) -> int:
    dims = [in_dim] + [width] * depth + [out_dim]
    return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def run(mode: str, args) -> dict:
    from phaseprobe.sweep.driver import run_sweep
    from phaseprobe.sweep.spec import make_spec

    spec = make_spec(dict(
        name=f"bench-{mode}", dataset="fashion-mnist", n_train=args.n_train, n_test=args.n_test,
        model="mlp", depth=2, width=256, activation="relu", alphas="1e-5:1e-1:41", mode=mode, seeds=4,
        optimizer="adam", lr=1e-3, batch_size=64, epochs=args.epochs, chunk_size=args.chunk,
    ))
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as out:
        t0 = time.perf_counter()
        df = run_sweep(spec, out)
        wall = time.perf_counter() - t0
    fin = df[df["final"]]
    runs = len(fin)
    p = weight_count(784, 256, 2, 10)
    steps = int(np.ceil(args.n_train / 64))
    train_flops = 6.0 * p * 64 * steps * fin["epoch"].sum()  # padded minibatches: 64 x steps per epoch
    eval_flops = runs * (6.0 * p * args.n_train + 2.0 * p * args.n_test)
    return {"mode": mode, "runs": runs, "wall": wall, "flops": train_flops + eval_flops,
            "epochs": int(fin["epoch"].sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per training (default 2)")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=82, help="members per compiled ensemble of the cold sweep")
    ap.add_argument("--gemm-n", type=int, default=2048)
    args = ap.parse_args()

    peak = sgemm_peak(args.gemm_n)
    rows = [run("cold", args), run("loop", args)]
    peak_after = sgemm_peak(args.gemm_n)
    dev = jax.devices()[0]
    print(f"device: {dev.platform} ({dev.device_kind}); CPU cores visible: {os.cpu_count()}; "
          f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"sgemm peak (float32 {args.gemm_n}^2 matmul, best of 10): {peak / 1e9:.1f} GFLOP/s before, "
          f"{peak_after / 1e9:.1f} GFLOP/s after the sweeps")
    print(f"Fashion-MNIST n_train={args.n_train}, n_test={args.n_test}, MLP 784-256-256-10, Adam, batch 64, "
          f"{args.epochs} epochs per training, 41 strengths x 4 seeds")
    hdr = f"{'sweep':<6} {'trainings':>9} {'epochs':>7} {'wall s':>8} {'runs/s':>8} {'GFLOP/s':>8} {'% of peak':>9}"
    print(hdr)
    print("-" * len(hdr))
    ref = max(peak, peak_after)
    for r in rows:
        rate = r["flops"] / r["wall"]
        print(f"{r['mode']:<6} {r['runs']:>9d} {r['epochs']:>7d} {r['wall']:>8.1f} {r['runs'] / r['wall']:>8.2f} "
              f"{rate / 1e9:>8.1f} {100 * rate / ref:>8.1f}%")


if __name__ == "__main__":
    main()
