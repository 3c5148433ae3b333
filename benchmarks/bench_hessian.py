"""Hessian spectrum tools against PyHessian: same weights, same data, same work; a ratio table.

Model: an MLP on scikit-learn's bundled 8x8 digits (1797 images, 10 classes, pixels / 16),
full-batch mean cross-entropy (PyTorch's ``nn.CrossEntropyLoss``, phaseprobe's E). The JAX
weights are copied into a ``torch.nn.Sequential`` so both libraries see the same function; the
script checks that both losses agree first.

Tasks, with the same amount of work on each side:

* top eigenvalue by power iteration, ``--iters`` Hessian-vector products (PyHessian's
  ``eigenvalues(maxIter=iters, tol=-inf)`` never stops early with that tolerance);
* Hutchinson trace with ``--probes`` Rademacher probes (``trace(maxIter=probes, tol=-inf)``).

Both sides run on ``--threads`` CPU threads (default 1: torch's intra-op pool and XLA's Eigen
pool). On a CPU shared with other work, two torch threads were 18x slower than one (spin-waiting
OpenMP threads under oversubscription: 32.8 s against 1.8 s for the 100-probe trace), so the
default is the setting that is fairest to PyHessian there. Times are wall-clock medians of
``--repeats`` runs. PyHessian's time includes building its
``hessian`` object (one forward and a create-graph backward it reuses for every HVP);
phaseprobe's steady-state time reuses its compiled program (the situation along an alpha path),
and the first call including compilation is reported separately. Other processes may share
the CPU: medians of repeats, and both sides measured interleaved.

    .venv/bin/python benchmarks/bench_hessian.py [--widths 64 128] [--iters 100] [--probes 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def _threads_from_argv(argv) -> int:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


# XLA reads its flags when jax is first imported: set the thread count before that
if _threads_from_argv(sys.argv) == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402


def load_digits_arrays():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)


def build(width: int, depth: int, seed: int):
    from phaseprobe.models import MLP

    return MLP(64, 10, depth=depth, width=width, activation="relu", key=jax.random.PRNGKey(seed))


def to_torch(model):
    import torch

    layers = []
    for i, lin in enumerate(model.layers):
        t = torch.nn.Linear(lin.weight.shape[1], lin.weight.shape[0])
        with torch.no_grad():
            t.weight.copy_(torch.from_numpy(np.asarray(lin.weight)))
            t.bias.copy_(torch.from_numpy(np.asarray(lin.bias)))
        layers.append(t)
        if i < len(model.layers) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def timed(f, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_one(width: int, depth: int, iters: int, probes: int, repeats: int, seed: int = 0) -> list[dict]:
    import torch
    from pyhessian import hessian as PyHessian

    from phaseprobe.geometry import hutchinson, lanczos, make_error_fn, num_params, params_of, power_iteration

    x, y = load_digits_arrays()
    model = build(width, depth, seed)
    params = params_of(model)
    E = make_error_fn(model, (x, y), "ce")
    net = to_torch(model)
    crit = torch.nn.CrossEntropyLoss()
    X, Y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        l_t = float(crit(net(X), Y))
    l_j = float(eqx.filter_jit(lambda f, p: f(p))(E, params))
    assert abs(l_t - l_j) < 1e-5 * max(1.0, abs(l_j)), (l_t, l_j)
    n = num_params(params)

    def ph_top():
        h = PyHessian(net, crit, data=(X, Y), cuda=False)
        vals, _ = h.eigenvalues(maxIter=iters, tol=float("-inf"), top_n=1)
        return vals[0]

    def ph_trace():
        h = PyHessian(net, crit, data=(X, Y), cuda=False)
        return np.asarray(h.trace(maxIter=probes, tol=float("-inf")))

    keys = iter(range(1, 10_000))
    t0 = time.perf_counter()
    power_iteration(E, params, num_iter=iters, key=0)
    first_top = time.perf_counter() - t0
    t0 = time.perf_counter()
    hutchinson(E, params, probes, key=0)
    first_tr = time.perf_counter() - t0

    # interleave the two libraries so that background load hits both alike
    jt, pt, jtr, ptr = [], [], [], []
    top_j = top_t = None
    tr_j = tr_t = None
    for _ in range(repeats):
        t, top_j = timed(lambda: power_iteration(E, params, num_iter=iters, key=next(keys))[0], 1)
        jt.append(t)
        t, top_t = timed(ph_top, 1)
        pt.append(t)
        t, tr_j = timed(lambda: hutchinson(E, params, probes, key=next(keys)), 1)
        jtr.append(t)
        t, tr_t = timed(ph_trace, 1)
        ptr.append(t)
    lan = lanczos(E, params, 1, num_iter=min(n, 80), key=0)
    tr_t_mean = float(tr_t.mean())
    tr_t_se = float(tr_t.std(ddof=1) / np.sqrt(len(tr_t)))
    top_ok = abs(top_j - top_t) <= 1e-3 * abs(lan.max_eig)
    tr_ok = abs(tr_j.tr_H - tr_t_mean) <= 3 * np.hypot(tr_j.tr_H_se, tr_t_se)
    rows = [
        dict(task=f"top eigenvalue ({iters} power its)", width=width, depth=depth, n_params=n,
             phaseprobe=f"{top_j:.5f}", pyhessian=f"{top_t:.5f}", agree=top_ok,
             t_phaseprobe=statistics.median(jt), t_first=first_top, t_pyhessian=statistics.median(pt)),
        dict(task=f"Hutchinson trace ({probes} probes)", width=width, depth=depth, n_params=n,
             phaseprobe=f"{tr_j.tr_H:.3f} +- {tr_j.tr_H_se:.3f}", pyhessian=f"{tr_t_mean:.3f} +- {tr_t_se:.3f}",
             agree=tr_ok, t_phaseprobe=statistics.median(jtr), t_first=first_tr, t_pyhessian=statistics.median(ptr)),
    ]
    for r in rows:
        r["speedup"] = r["t_pyhessian"] / r["t_phaseprobe"]
    print(f"  lanczos top eigenvalue (reference): {lan.max_eig:.5f}   residual {lan.largest_residuals[0]:.1e}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for both libraries (1 or the machine's default)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); digits 1797 x 64, MLP depth {args.depth}, relu, full batch")
    rows = []
    for w in args.widths:
        print(f"width {w}:")
        rows += bench_one(w, args.depth, args.iters, args.probes, args.repeats)
    hdr = ("| task | params | phaseprobe | PyHessian | agree | phaseprobe s (first call) | PyHessian s | speed-up |\n"
           "|---|---:|---|---|:-:|---:|---:|---:|")
    print()
    print(hdr)
    for r in rows:
        print(f"| {r['task']} | {r['n_params']} | {r['phaseprobe']} | {r['pyhessian']} | {'yes' if r['agree'] else 'NO'} "
              f"| {r['t_phaseprobe']:.3f} ({r['t_first']:.2f}) | {r['t_pyhessian']:.3f} | {r['speedup']:.1f}x |")
    if not all(r["agree"] for r in rows):
        raise SystemExit("results disagree")


if __name__ == "__main__":
    main()
