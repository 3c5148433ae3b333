"""Throughput at the authors' workload: phaseprobe's trainer against the authors' PyTorch loop.

Workload (arXiv 2512.11866's protocol, ``examples/authors_fmnist_full.toml``): MLP 784-128-128-10
with sigmoid hidden units and PyTorch's default initialisation, cross-entropy, Adam lr 1.5e-3
with COUPLED weight decay beta (``torch.optim.Adam(weight_decay=beta)``; phaseprobe's
``optimizer="adam"`` with ``alpha = beta / 2``), minibatches of 64 in a fresh shuffled order
every epoch, Fashion-MNIST normalised as the authors do ((x/255 - 0.1307)/0.3081).

Contenders, timed side by side in one process in interleaved rounds (the median of the rounds
is reported, compilation and warm-up excluded):

* **torch loop**: the authors' one-model loop (``torch.randperm`` minibatch indices, as a
  shuffled ``DataLoader`` gives, ``nn.Sequential``, ``torch.optim.Adam``), with 1 and with 2
  intra-op threads; the faster is the reference ("best threads");
* **phaseprobe K=3** and **K=16**: one ``Trainer`` each, members = seeds x strengths (every
  member its own strength and its own minibatch order, as a sweep gives them), patience early
  stopping configured as the spec does; the epoch program ``Trainer._run`` is timed (the
  full-pass evaluation that ``train()`` adds once per strength is not part of a step).

Rates are per member-step (one optimiser step of one model on one minibatch of 64). The sgemm
limit is measured in the same run: float32 matrix products at the step's shapes (the first
layer's ``(64, 784) x (784, 128)`` for 16 members, batched), converted to member-steps/s with
``FLOPs per member-step = 6 x P x 64`` (P = 118,282 parameters: 2 for the forward product, 4 for
the backward). CPU-seconds per wall-second (``time.process_time``, all threads of the process)
are printed for every contender: on a loaded machine they show what share of the cores each
side got.

Two ceilings are printed beside the rates. The *machine limit*: the same FLOPs per member-step
at the best float32 matrix-product rate measured in this run, JAX's or torch's, at the step's
shapes and at 2048 x 2048 (torch's MKL kernels are the faster here). The *matrix-product
ceiling* (``--profile``): one epoch of each trainer contender is traced with ``jax.profiler``;
the wall time during which at least one of its matrix-product kernels ran (the union of their
intervals) bounds its rate even if every other operation of the step (activations, softmax,
Adam's elementwise passes, the gather, copies) cost nothing. The profile also gives the share of
each kind of operation.

Run: ``.venv/bin/python benchmarks/bench_authors.py [--quick] [--rounds 3] [--steps 938] [--profile]``.
``--layout member_chunk=4,unroll=2`` adds rows of the trainer with other layout fields.
``--quick`` (about two minutes on two idle cores) times 300 steps per contender and round,
two rounds. The last line is ``ratios: k3=<x> k16=<y> limit=<fraction of the sgemm limit at k16>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

BATCH = 64
LR = 1.5e-3


def load(n_steps: int):
    """The first ``n_steps * 64`` Fashion-MNIST training images (all 60,000 for 938 steps)."""
    from phaseprobe.data import load_dataset

    n = min(60_000, n_steps * BATCH)
    data = load_dataset("fashion-mnist", normalize="mnist", n_train=None if n >= 60_000 else n)
    return data


def sgemm_rate(repeats: int = 20) -> tuple[float, str]:
    """GFLOP/s of float32 matrix products at the step's shapes (16 members batched), JAX."""
    import jax
    import jax.numpy as jnp

    k = 16
    x = jax.random.normal(jax.random.PRNGKey(0), (k, BATCH, 784), jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(1), (k, 784, 128), jnp.float32)
    d = jax.random.normal(jax.random.PRNGKey(2), (k, BATCH, 128), jnp.float32)
    # the first layer's forward product and its weight gradient: 2/3 of a step's FLOPs
    f = jax.jit(lambda x, w, d: (jnp.einsum("kbi,kio->kbo", x, w), jnp.einsum("kbi,kbo->kio", x, d)))
    jax.block_until_ready(f(x, w, d))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(x, w, d))
        ts.append(time.perf_counter() - t)
    flops = 2 * 2 * k * BATCH * 784 * 128
    return flops / min(ts) / 1e9, f"{k} x [(64,784)@(784,128) and (784,64)@(64,128)], best of {repeats}"


def sgemm_best(repeats: int = 10) -> dict[str, float]:
    """Best GFLOP/s of float32 matrix products at 2048^2 (JAX, torch) and at the step's shapes
    (torch; JAX's is :func:`sgemm_rate`)."""
    import jax
    import jax.numpy as jnp
    import torch

    k = 16
    xs = [np.random.default_rng(i).standard_normal(sh).astype(np.float32)
          for i, sh in enumerate([(k, BATCH, 784), (k, 784, 128), (k, BATCH, 128), (2048, 2048), (2048, 2048)])]
    tx = [torch.from_numpy(a) for a in xs]
    step_flops, sq_flops = 2 * 2 * k * BATCH * 784 * 128, 2 * 2048 ** 3

    def best(fn) -> float:
        fn()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts)

    a, b = jnp.asarray(xs[3]), jnp.asarray(xs[4])
    f_sq = jax.jit(lambda a, b: a @ b)
    out = {"jax, 2048^2": sq_flops / best(lambda: jax.block_until_ready(f_sq(a, b))) / 1e9}
    old = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        out["torch, step shapes"] = step_flops / best(
            lambda: (torch.bmm(tx[0], tx[1]), torch.bmm(tx[0].transpose(1, 2), tx[2]))) / 1e9
        out["torch, 2048^2"] = sq_flops / best(lambda: tx[3] @ tx[4]) / 1e9
    finally:
        torch.set_num_threads(old)
    return out


def _matmul_kernels(hlo: str) -> set[str]:
    """Names of the instructions of a compiled HLO text that are (or fuse) a matrix product."""
    import re

    comps, cur = {}, None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m and not line.startswith(" "):
            cur = m.group(1)
            comps[cur] = []
        elif cur is not None:
            comps[cur].append(line)
    has_dot = {name for name, body in comps.items() if any(" dot(" in ln for ln in body)}
    fused = {c for body in comps.values() for ln in body for c in re.findall(r"calls=%([\w.\-]+)", ln)}
    names = set()
    for comp, body in comps.items():
        if comp in fused:
            continue  # the inside of a fusion is not a kernel of its own
        for ln in body:
            m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? (dot|fusion)\(", ln)
            if not m:
                continue
            if m.group(2) == "dot":
                names.add(m.group(1))
            else:
                c = re.search(r"calls=%([\w.\-]+)", ln)
                if c and c.group(1) in has_dot:
                    names.add(m.group(1))
    return names


def union_length(spans) -> float:
    """Total length covered by the intervals ``[(start, end), ...]`` (overlaps counted once)."""
    union, end = 0.0, -np.inf
    for a, b in sorted(spans):
        if b > end:
            union += b - max(a, end)
            end = b
    return union


def profile_epoch(run, hlo: str, directory: str) -> dict:
    """Trace one call of ``run`` with ``jax.profiler``; the time by kind of operation.

    **Returns:** ``{"wall": s, "matmul_union": s, "shares": {kind: fraction of the summed
    kernel time}}``; ``matmul_union`` is the wall time during which at least one
    matrix-product kernel ran.
    """
    import glob
    import gzip
    import json

    import jax

    mm = _matmul_kernels(hlo)
    with jax.profiler.trace(directory, create_perfetto_trace=True):
        wall = run()
    path = sorted(glob.glob(os.path.join(directory, "**", "*.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    kernels = [e for e in events if e.get("ph") == "X" and "dur" in e]
    names = {e["name"] for e in kernels}
    kernels = [e for e in kernels if not e["name"].startswith(("$", "ThunkExecutor", "SlinkyThreadPool", "while"))]

    def kind(name: str) -> str:
        if name in mm:
            return "matrix products"
        if name.startswith("copy"):
            return "copies of the loop carry"
        if "gather" in name:
            return "minibatch gathers"
        if name.startswith("sort") or "iota" in name:
            return "shuffles"
        return "elementwise and reductions (activations, softmax, Adam, guard)"

    total: dict[str, float] = {}
    for e in kernels:
        total[kind(e["name"])] = total.get(kind(e["name"]), 0.0) + e["dur"]
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in kernels if e["name"] in mm]
    union = union_length(spans)
    summed = sum(total.values()) or 1.0
    if not spans:
        raise RuntimeError(f"profile: no matrix-product kernel found among {len(names)} traced names")
    return {"wall": wall, "matmul_union": union / 1e6, "shares": {k: v / summed for k, v in total.items()}}


def torch_contender(data, n_steps: int, beta: float):
    """The authors' loop on one model; returns ``run(threads) -> seconds for n_steps``."""
    import torch

    xt = torch.from_numpy(np.asarray(data.x_train, np.float32))
    yt = torch.from_numpy(np.asarray(data.y_train).astype(np.int64))
    n = xt.shape[0]

    def run(threads: int) -> float:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            torch.manual_seed(0)
            net = torch.nn.Sequential(
                torch.nn.Linear(784, 128), torch.nn.Sigmoid(), torch.nn.Linear(128, 128), torch.nn.Sigmoid(),
                torch.nn.Linear(128, 10),
            )
            opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=beta)
            done = 0
            t = time.perf_counter()
            while done < n_steps:
                perm = torch.randperm(n)
                for s in range(0, n, BATCH):
                    if done == n_steps:
                        break
                    i = perm[s:s + BATCH]
                    loss = torch.nn.functional.cross_entropy(net(xt[i]), yt[i])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    done += 1
            return time.perf_counter() - t
        finally:
            torch.set_num_threads(old)

    return run, torch.__version__


def trainer_contender(data, k: int, betas: np.ndarray, config_changes: dict):
    """phaseprobe's trainer with ``k`` members; returns ``(run() -> seconds for one epoch, steps, compile s)``."""
    import jax
    import jax.numpy as jnp

    from phaseprobe.models import MLP, init_members
    from phaseprobe.train import TrainConfig, Trainer

    keys = jax.random.split(jax.random.PRNGKey(0), k)
    model = init_members(lambda key: MLP(784, 10, depth=2, width=128, activation="sigmoid", init="torch", key=key), keys)
    cfg = TrainConfig(loss="ce", optimizer="adam", lr=LR, batch_size=BATCH, epochs=50, patience=5, **config_changes)
    tr = Trainer(model, data, cfg)
    alpha = jnp.asarray(betas[:k] / 2.0, jnp.float32)  # beta/2 * ||w||^2 = alpha * ||w||^2
    shuffle = jax.random.split(jax.random.PRNGKey(1), k)
    state, _, a, lr, ref, _, _ = tr._prepare(model, alpha, key=shuffle)
    args = (jnp.asarray(1, jnp.int32), jnp.asarray(50, jnp.int32), a, lr, ref, tr.x_train, tr.y_train)
    t = time.perf_counter()
    jax.block_until_ready(tr._run(state, *args))
    compile_s = time.perf_counter() - t

    def run() -> float:
        t = time.perf_counter()
        jax.block_until_ready(tr._run(state, *args))
        return time.perf_counter() - t

    run.hlo = lambda: tr._run.lower(state, *args).compile().as_text()
    return run, tr.steps_per_epoch, compile_s, tr.config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 steps per contender and round, 2 rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=938, help="minibatch steps per timed run (938 = one epoch of 60k)")
    ap.add_argument("--profile", action="store_true",
                    help="trace one epoch of each trainer contender: time by kind of operation, matrix-product ceiling")
    ap.add_argument("--layout", action="append", default=[], metavar="FIELD=INT[,FIELD=INT]",
                    help="also time the trainer with these TrainConfig layout fields (e.g. member_chunk=4,unroll=2); "
                         "repeatable; the ratios line stays the default layout's")
    args = ap.parse_args()
    layouts = [{kv.split("=")[0]: int(kv.split("=")[1]) for kv in spec.split(",")} for spec in args.layout]
    steps, rounds = (300, 2) if args.quick else (args.steps, args.rounds)

    import jax

    data = load(steps)
    n_train = int(data.x_train.shape[0])
    betas = np.arange(1, 17, dtype=np.float64) * 4.4e-4  # the authors' grid: beta = 4.4e-4 * k
    load0 = os.getloadavg()
    gflops0, sgemm_what = sgemm_rate()

    torch_run, torch_version = torch_contender(data, steps, float(betas[0]))
    torch_run(1)  # warm-up
    contenders: dict[str, tuple] = {}
    contenders["torch loop, 1 thread"] = (lambda: torch_run(1), steps, 1)
    contenders["torch loop, 2 threads"] = (lambda: torch_run(2), steps, 1)
    compiles, configs = {}, {}
    for k in (3, 16):
        run, spe, comp, cfg = trainer_contender(data, k, betas, {})
        contenders[f"phaseprobe K={k}"] = (run, spe, k)
        compiles[k], configs[k] = comp, cfg
        for lay in layouts:
            run, spe, _, _ = trainer_contender(data, k, betas, lay)
            contenders[f"phaseprobe K={k}, " + ",".join(f"{a}={b}" for a, b in lay.items())] = (run, spe, k)

    wall = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for r in range(rounds):
        for name, (fn, n_steps, k) in contenders.items():
            c0 = time.process_time()
            w = fn()
            wall[name].append(w)
            cpu[name].append((time.process_time() - c0) / w)
            print(f"round {r + 1}: {name}: {k * n_steps / w:,.0f} member-steps/s, {cpu[name][-1]:.2f} cpu-s/wall-s, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    gflops1, _ = sgemm_rate()
    profiles = {}
    if args.profile:
        import tempfile
        for name, (fn, n_steps, k) in contenders.items():
            if name.startswith("phaseprobe"):
                with tempfile.TemporaryDirectory() as d:
                    profiles[name] = profile_epoch(fn, fn.hlo(), d)
    gflops = max(gflops0, gflops1)
    load1 = os.getloadavg()

    P = 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    flops_step = 6 * P * BATCH
    limit = gflops * 1e9 / flops_step
    rate = {name: k * n / statistics.median(wall[name]) for name, (_, n, k) in contenders.items()}
    t1, t2 = rate["torch loop, 1 thread"], rate["torch loop, 2 threads"]
    torch_best = max(t1, t2)
    best_name = "torch loop, 1 thread" if t1 >= t2 else "torch loop, 2 threads"

    print()
    print(f"data: Fashion-MNIST, {n_train} training images ({steps} steps of {BATCH} per timed run); "
          f"MLP 784-128-128-10 sigmoid, Adam lr {LR} + coupled weight decay beta = 4.4e-4 * k")
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}, {os.cpu_count()} cores); torch {torch_version}; "
          f"load average (1 min) {load0[0]:.1f} at start, {load1[0]:.1f} at end")
    print(f"trainer config: shuffle={configs[3].shuffle!r}, member_chunk K=3: {configs[3].member_chunk}, "
          f"K=16: {configs[16].member_chunk}, unroll={configs[3].unroll}; compile K=3 {compiles[3]:.1f} s, "
          f"K=16 {compiles[16]:.1f} s (excluded)")
    print(f"sgemm: {sgemm_what}: {gflops0:.1f} GFLOP/s at start, {gflops1:.1f} at end, using {gflops:.1f}")
    print(f"sgemm limit = GFLOP/s / (6 x P x 64) = {gflops:.1f}e9 / (6 x {P} x {BATCH} = {flops_step / 1e6:.1f} MFLOP) "
          f"= {limit:,.0f} member-steps/s")
    print()
    head = f"{'contender':40s} {'member-steps/s':>15s} {'x torch best':>13s} {'of sgemm limit':>15s} {'cpu-s/wall-s':>13s}"
    print(head)
    print("-" * len(head))
    for name in contenders:
        mark = "  (best threads)" if name == best_name else ""
        print(f"{name:40s} {rate[name]:15,.0f} {rate[name] / torch_best:12.2f}x {rate[name] / limit:14.1%} "
              f"{statistics.median(cpu[name]):13.2f}{mark}")
    print(f"(median of {rounds} interleaved rounds; all rounds: " + "; ".join(
        f"{name}: " + ", ".join(f"{contenders[name][2] * contenders[name][1] / w:,.0f}" for w in ws)
        for name, ws in wall.items()) + ")")
    best_rates = {"jax, step shapes": gflops, **sgemm_best()}
    best_name_rate = max(best_rates, key=best_rates.get)
    machine = best_rates[best_name_rate] * 1e9 / flops_step
    print()
    print("best float32 matrix-product rates in this run (GFLOP/s): " +
          ", ".join(f"{n} {v:.0f}" for n, v in best_rates.items()))
    print(f"machine limit = {best_rates[best_name_rate]:.0f}e9 / {flops_step / 1e6:.1f} MFLOP = {machine:,.0f} member-steps/s "
          f"({best_name_rate}) = {machine / torch_best:.1f}x torch best; 8x torch best = {8 * torch_best:,.0f} "
          f"member-steps/s = {8 * torch_best / machine:.0%} of it, with every operation but the matrix products free")
    for name, pr in profiles.items():
        _, n_steps, k = contenders[name]
        ceiling = k * n_steps / pr["matmul_union"]
        print(f"profile {name}: one epoch {k * n_steps / pr['wall']:,.0f} member-steps/s; matrix products ran "
              f"{pr['matmul_union'] / n_steps * 1e3:.2f} ms of each step ({pr['matmul_union'] / pr['wall']:.0%} of the wall "
              f"time): ceiling {ceiling:,.0f} member-steps/s = {ceiling / torch_best:.1f}x torch best with everything else free")
        print("    kernel time by kind: " + ", ".join(
            f"{kind} {share:.0%}" for kind, share in sorted(pr["shares"].items(), key=lambda kv: -kv[1])))
    k3 = rate["phaseprobe K=3"] / torch_best
    k16 = rate["phaseprobe K=16"] / torch_best
    print(f"ratios: k3={k3:.2f} k16={k16:.2f} limit={rate['phaseprobe K=16'] / limit:.3f}")


if __name__ == "__main__":
    main()
