"""Throughput of the vectorised trainer against one-at-a-time training and a PyTorch loop.

Workload: 16 MLPs 784-128-128-10 (ReLU, PyTorch-default init), one L2 strength alpha each,
cross-entropy + alpha*||w||^2 (coupled, canonical convention), Adam (lr 1e-3), batch 256,
3 epochs over 10,000 Fashion-MNIST training images (or random data of that shape when the
dataset folder is absent; the table says which).

Contenders, run side by side in one process, in interleaved rounds (median of ``--repeats``):

* **ensemble**: one ``Trainer`` with K = 16 members, one compiled program (vmap x scan);
  also with ``member_chunk=4`` (members 4 at a time: their state stays in cache), with
  ``shuffle="shared"`` (one minibatch order for all members: one gather per step and one large
  first-layer product instead of 16 small ones), and with both;
* **one at a time**: the same trainer with K = 1, called 16 times (one compilation, reused);
* **torch loop**: a plain per-model PyTorch loop (``nn.Sequential``, ``torch.optim.Adam``),
  16 models one after the other, the same penalty in the loss.

Times exclude compilation (reported separately) and, for the trainer rows, the final full-pass
evaluation that ``train()`` records (the "train() end to end" row includes it). FLOPs are
counted as ``6 * P * samples`` (P = parameters of one member, 118,282; samples = 10,000 x 3
epochs x 16 members): 2 for the forward matmul, 4 for the backward. The backward of the first
layer needs no input gradient, so the matmul work actually done is 0.72 of that count; the
table states both. The sgemm peak is a large float32 matmul timed with JAX in the same run.

Run: ``.venv/bin/python benchmarks/bench_trainer.py [--repeats 5] [--members 16]``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import struct
import time
from pathlib import Path

import numpy as np

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def load_data(n: int, seed: int = 0):
    """First n Fashion-MNIST training images as (n, 784) float32 in [0, 1], or random data."""
    imgs, labs = FMNIST_DIR / "train-images-idx3-ubyte.gz", FMNIST_DIR / "train-labels-idx1-ubyte.gz"
    if imgs.exists() and labs.exists():
        with gzip.open(imgs, "rb") as f:
            _, count, rows, cols = struct.unpack(">IIII", f.read(16))
            x = np.frombuffer(f.read(), np.uint8).reshape(count, rows * cols)[:n]
        with gzip.open(labs, "rb") as f:
            struct.unpack(">II", f.read(8))
            y = np.frombuffer(f.read(), np.uint8)[:n]
        return (x.astype(np.float32) / 255.0), y.astype(np.int32), f"Fashion-MNIST ({FMNIST_DIR})"
    rng = np.random.default_rng(seed)
    return (rng.random((n, 784), np.float32), rng.integers(0, 10, n).astype(np.int32),
            "random data (Fashion-MNIST folder absent)")


def sgemm_peak(n: int = 2048, repeats: int = 7) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-1thread", action="store_true",
                    help="also time the PyTorch loop with one intra-op thread (robust when other processes load the cores)")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from phaseprobe.data.base import Dataset
    from phaseprobe.models import MLP, count_params, init_members
    from phaseprobe.train import TrainConfig, Trainer

    K, n, E, B = args.members, args.n, args.epochs, args.batch
    x, y, source = load_data(n)
    data = Dataset("bench", x, y, x[:1000], y[:1000], 10)
    alphas = jnp.asarray(np.logspace(-5, -2, K), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), K)
    shuffle = jax.random.split(jax.random.PRNGKey(1), K)
    model = init_members(lambda k: MLP(784, 10, depth=2, width=128, key=k), keys)
    P = count_params(MLP(784, 10, depth=2, width=128, key=keys[0]))
    cfg = TrainConfig(loss="ce", optimizer="adam", lr=1e-3, batch_size=B, epochs=E)
    flops = 6.0 * P * n * E * K
    real_matmul = (4 * 784 * 128 + 6 * (128 * 128 + 128 * 10)) / (6 * P)

    load0 = os.getloadavg()
    peak = sgemm_peak()

    # ---- the ensemble: K members, one program -------------------------------------------------
    ens = Trainer(model, data, cfg)
    t = time.perf_counter()
    state, _, a_, lr_, ref_, max_e, _ = ens._prepare(model, alphas, key=shuffle)
    run_args = (jnp.asarray(E, jnp.int32), jnp.asarray(max_e, jnp.int32), a_, lr_, ref_, ens.x_train, ens.y_train)
    jax.block_until_ready(ens._run(state, *run_args))
    compile_ens = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(ens.train(model, alphas, key=shuffle).state.params)  # compiles the evaluation
    compile_eval = time.perf_counter() - t

    def ensemble_loop():
        st, *_ = ens._prepare(model, alphas, key=shuffle)
        t = time.perf_counter()
        jax.block_until_ready(ens._run(st, *run_args))
        return time.perf_counter() - t

    # the same ensemble with other layouts: one shared minibatch order (shuffle="shared"),
    # members 4 at a time (member_chunk=4), and both
    import dataclasses

    variants, compile_variants = {}, {}
    for label, changes in (("ensemble, member_chunk=4", dict(member_chunk=4)),
                           ("ensemble, shuffle='shared'", dict(shuffle="shared")),
                           ("ensemble, shared + chunk 4", dict(shuffle="shared", member_chunk=4))):
        tv = Trainer(model, data, dataclasses.replace(cfg, **changes))
        t = time.perf_counter()
        st_v, *_ = tv._prepare(model, alphas, key=shuffle)
        jax.block_until_ready(tv._run(st_v, *run_args[:-2], tv.x_train, tv.y_train))
        compile_variants[label] = time.perf_counter() - t

        def variant_loop(tv=tv):
            st, *_ = tv._prepare(model, alphas, key=shuffle)
            t = time.perf_counter()
            jax.block_until_ready(tv._run(st, *run_args[:-2], tv.x_train, tv.y_train))
            return time.perf_counter() - t

        variants[label] = variant_loop

    def ensemble_train():
        t = time.perf_counter()
        r = ens.train(model, alphas, key=shuffle)
        jax.block_until_ready(r.state.params)
        return time.perf_counter() - t

    # ---- one at a time: the same trainer with K = 1, K calls --------------------------------------
    members = [jax.tree_util.tree_map(lambda a, j=j: a[j : j + 1], model) for j in range(K)]
    single = Trainer(members[0], data, cfg)
    t = time.perf_counter()
    st1, _, a1, lr1, ref1, _, _ = single._prepare(members[0], alphas[:1], key=shuffle[:1])
    one_args = (jnp.asarray(E, jnp.int32), jnp.asarray(E, jnp.int32))
    jax.block_until_ready(single._run(st1, *one_args, a1, lr1, ref1, single.x_train, single.y_train))
    compile_single = time.perf_counter() - t

    def single_loop():
        total = 0.0
        for j in range(K):
            st, _, a, lr, ref, _, _ = single._prepare(members[j], alphas[j : j + 1], key=shuffle[j : j + 1])
            t = time.perf_counter()
            jax.block_until_ready(single._run(st, *one_args, a, lr, ref, single.x_train, single.y_train))
            total += time.perf_counter() - t
        return total

    # ---- plain PyTorch loop ---------------------------------------------------------------------------
    torch_loop = None
    torch_version = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:  # the table says so
            torch = None
        if torch is not None:
            torch_version = f"{torch.__version__}, {torch.get_num_threads()} threads"
            xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
            alphas_np = np.asarray(alphas)

            def torch_one(alpha: float, seed: int, epochs: int = E):
                torch.manual_seed(seed)
                net = torch.nn.Sequential(
                    torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                    torch.nn.Linear(128, 10),
                )
                opt = torch.optim.Adam(net.parameters(), lr=1e-3)
                params = list(net.parameters())
                for _ in range(epochs):
                    perm = torch.randperm(n)
                    for s in range(0, n, B):
                        i = perm[s : s + B]
                        loss = torch.nn.functional.cross_entropy(net(xt[i]), yt[i])
                        loss = loss + alpha * sum((p * p).sum() for p in params)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                return net

            torch_one(1e-3, 0, epochs=1)  # warm-up (allocator, kernels)

            def torch_loop(threads: int | None = None):
                default = torch.get_num_threads()
                if threads is not None:
                    torch.set_num_threads(threads)
                try:
                    t = time.perf_counter()
                    for j in range(K):
                        torch_one(float(alphas_np[j]), j)
                    return time.perf_counter() - t
                finally:
                    torch.set_num_threads(default)

    # ---- interleaved rounds --------------------------------------------------------------------------
    ens_name = f"ensemble (K={K}, epoch loop)"
    contenders = {ens_name: ensemble_loop, **variants,
                  "ensemble train() end to end": ensemble_train,
                  f"one at a time (K=1, {K} calls)": single_loop}
    if torch_loop is not None:
        contenders[f"torch loop ({K} models)"] = torch_loop
        if args.torch_1thread:
            contenders[f"torch loop, 1 thread"] = lambda: torch_loop(1)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.repeats):
        for name, fn in contenders.items():
            c0 = time.process_time()
            times[name].append(fn())
            cpu[name].append(time.process_time() - c0)  # all threads of this process
            print(f"round {r + 1}: {name}: {times[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} s cpu, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    load1 = os.getloadavg()
    peak_end = sgemm_peak()
    peak_med = max(peak, peak_end)  # the best the cores did: the conservative denominator

    med = {k: statistics.median(v) for k, v in times.items()}
    ens_t = med[ens_name]
    print()
    print(f"data: {source}; {n} samples x {E} epochs x {K} members, batch {B}, Adam lr 1e-3, CE + alpha||w||^2")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cores); torch {torch_version or 'not run'}")
    print(f"load average (1 min) at start {load0[0]:.1f}, at end {load1[0]:.1f} -- the cores are shared")
    print(f"sgemm peak (2048^2 float32 matmul, JAX): {peak:.0f} GFLOP/s at start, {peak_end:.0f} at end; using the larger, {peak_med:.0f}")
    print(f"FLOPs counted: 6 * P * samples = 6 * {P} * {n * E * K} = {flops / 1e9:.1f} GFLOP "
          f"(matmul work actually done: {real_matmul:.2f} of that)")
    print(f"compile: ensemble epoch program {compile_ens:.1f} s, its evaluation {compile_eval:.1f} s, "
          f"K=1 epoch program {compile_single:.1f} s, "
          + ", ".join(f"{k.split(', ')[1]} {v:.1f} s" for k, v in compile_variants.items()))
    print()
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    ens_c = cmed[ens_name]
    head = (f"{'contender':32s} {'wall s':>7s} {'min s':>6s} {'GFLOP/s':>8s} {'% sgemm':>8s} {'ens. x':>7s}"
            f" {'cpu s':>7s} {'GFLOP/cpu-s':>12s} {'ens. x (cpu)':>13s}")
    print(head)
    print("-" * len(head))
    for name, v in times.items():
        m = med[name]
        gf = flops / m / 1e9
        print(f"{name:32s} {m:7.2f} {min(v):6.2f} {gf:8.1f} {100 * gf / peak_med:7.0f}% {m / ens_t:6.2f}x"
              f" {cmed[name]:7.2f} {flops / cmed[name] / 1e9:12.1f} {cmed[name] / ens_c:12.2f}x")
    print("(wall: median over rounds; 'ens. x' = this contender's time / the ensemble epoch loop's; cpu s = "
          "process CPU time, all threads, which contention from other processes inflates less than wall time; "
          "the sgemm peak is for both cores)")
    print()
    print(f"runs per contender: {args.repeats}; all times: " + "; ".join(
        f"{k.split(' (')[0]}: " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()))


if __name__ == "__main__":
    main()
