"""Hessian spectrum tools against the strongest PyTorch peers: same model, data, core, accuracy.

Model and data: the authors' 784-128-128-10 sigmoid MLP (PyTorch's default init) on the first
``--sizes`` Fashion-MNIST training images (the authors' normalisation), trained ``--epochs``
epochs with Adam (lr 1.5e-3, batch 64) so the Hessian is that of a trained model; full-batch
mean cross-entropy (PyTorch's ``nn.CrossEntropyLoss``, phaseprobe's E). The JAX weights are
copied into a ``torch.nn.Sequential``; the script checks both losses agree, and that both
libraries flatten the parameters in the same order, before timing anything.

Peers (``benchmarks/requirements-bench.txt``): PyHessian 0.1 (power iteration, Hutchinson),
hessian-eigenthings 1.0.0a5 (Lanczos with full reorthogonalisation for either end, Hutch++),
curvlinops 3.0.1 (``HessianLinearOperator`` through ``scipy.sparse.linalg.eigsh``; its
``hutchpp_trace`` and ``xtrace``).

Equal accuracy:

* eigenvalues: every returned eigenvector's residual ``||H y - theta y|| / |lambda_max|`` is
  recomputed with one exact Hessian-vector product (outside the timing) and printed; Lanczos
  runs (phaseprobe, hessian-eigenthings) take the number of steps at which phaseprobe's
  residual bound first falls below ``--tol`` and its Ritz value agrees with the pilot's extreme
  eigenvalue to the same tolerance (found from one pilot run's tridiagonal prefixes),
  ``eigsh`` runs with ``tol`` set so that ARPACK stops at that residual.
* trace: Hutch++ and XTrace take the budget at which a pilot Hutch++ reaches a relative standard
  error ``--trace-se`` (a multiple of 6 products); plain Hutchinson (phaseprobe, PyHessian) runs
  ``--hutchinson-probes`` probes and its time is scaled to the same standard error by the
  ``1/sqrt(probes)`` law (the row says so).

Each process is pinned to ONE core (``os.sched_setaffinity(0, {core})`` before JAX and torch
are imported; XLA's and torch's pools set to one thread too), and every row reports its
CPU-seconds per wall-second (process CPU time / wall time: at most 1.0 when pinned, below 1.0
when the core is shared with other work); the process CPU seconds are printed too, and a
ratio on them, since on a shared core the wall time also measures the scheduler. Times are medians of ``--repeats`` interleaved runs;
phaseprobe's steady-state time reuses its compiled program (the situation along a path) and
its first call, compile included, is printed separately; peers' times include building their
operator objects.

    .venv/bin/python benchmarks/bench_hessian.py [--sizes 1000 10000] [--repeats 3] [--core 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings


def _arg(argv, name: str, default: str) -> str:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


# one core for everything, fixed before jax and torch are imported (their thread pools size
# themselves to the affinity mask); XLA's flags are read at import as well
CORE = int(_arg(sys.argv, "--core", "0"))
if CORE >= 0:
    os.sched_setaffinity(0, {CORE})
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
os.environ.setdefault("OMP_NUM_THREADS", "1")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

TARGETS = ("top eigenvalue", "bottom eigenvalue", "trace")


# ---------------------------------------------------------------------------------------------
# model, data, a trained point
# ---------------------------------------------------------------------------------------------
def trained_point(n: int, epochs: int, seed: int = 0):
    import optax

    from phaseprobe.data.images import load_fashion_mnist
    from phaseprobe.geometry import params_of
    from phaseprobe.models import MLP

    ds = load_fashion_mnist(n_train=n, n_test=100, normalize="mnist", seed=seed)
    x, y = ds.x_train.astype(np.float32), ds.y_train.astype(np.int32)
    model = MLP(784, 10, depth=2, width=128, activation="sigmoid", init="torch", key=jax.random.PRNGKey(seed))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.adam(1.5e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s, xb, yb):
        def loss(p):
            logits = jax.vmap(eqx.combine(p, static))(xb)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    rng = np.random.default_rng(seed)
    previous = params
    for _ in range(epochs):
        previous = params
        order = rng.permutation(n)
        for i in range(0, n - 63, 64):
            b = order[i:i + 64]
            params, state = step(params, state, x[b], y[b])
    model = eqx.combine(params, static)
    return model, x, y, params_of(model), params_of(eqx.combine(previous, static))


def to_torch(model):
    import torch

    layers = []
    for i, lin in enumerate(model.layers):
        t = torch.nn.Linear(lin.weight.shape[1], lin.weight.shape[0])
        with torch.no_grad():
            t.weight.copy_(torch.from_numpy(np.array(lin.weight)))
            t.bias.copy_(torch.from_numpy(np.array(lin.bias)))
        layers.append(t)
        if i < len(model.layers) - 1:
            layers.append(torch.nn.Sigmoid())
    return torch.nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
class Clock:
    """Wall and process-CPU time of repeated calls: medians and CPU-seconds per wall-second."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def __call__(self, f):
        c0, t0 = time.process_time(), time.perf_counter()
        out = f()
        self.wall.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)
        return out

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def load(self) -> float:
        return sum(self.cpu) / max(sum(self.wall), 1e-12)


def steps_to_converge(alphas, betas, tol: float, scale: float, end: str) -> int:
    """First Lanczos step ``j`` whose ``end`` Ritz value has converged to the extreme eigenvalue:
    its residual bound ``|beta_j s_{j,i}| <= tol * scale`` AND it lies within ``tol * scale`` of
    the whole run's ``end`` Ritz value.

    The Ritz values of ``j`` steps are those of the ``j x j`` leading block of the tridiagonal
    matrix, so one long run gives the convergence of every shorter one from the same start. A
    small residual alone is not enough: an early bottom Ritz value can sit, well converged, on an
    interior eigenvalue near 0 before the Krylov space has seen the most negative one.
    """
    a, b = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    full = scipy.linalg.eigvalsh_tridiagonal(a, b[: len(a) - 1])
    target = full[0] if end == "bottom" else full[-1]
    for j in range(2, len(a) + 1):
        theta, S = scipy.linalg.eigh_tridiagonal(a[:j], b[: j - 1])
        i = 0 if end == "bottom" else j - 1
        if abs(b[j - 1] * S[-1, i]) <= tol * scale and abs(theta[i] - target) <= tol * scale:
            return j
    return len(a) + 1


# ---------------------------------------------------------------------------------------------
# one data size
# ---------------------------------------------------------------------------------------------
def bench_size(n_images: int, args) -> tuple[list[dict], list[str]]:
    import torch
    from pyhessian import hessian as PyHessian
    import hessian_eigenthings as he
    import curvlinops
    from scipy.sparse.linalg import LinearOperator, eigsh

    from phaseprobe.geometry import hutchinson, lanczos, make_error_fn, num_params
    from phaseprobe.geometry.hessian import hvp_flat
    from phaseprobe.geometry.lanczos import _lanczos_loss
    from phaseprobe.geometry.trace import hutch_plus_plus, trace_matvecs_for, xtrace
    from jax.flatten_util import ravel_pytree

    notes = []

    def note(line):
        notes.append(line)
        print("  " + line, flush=True)

    model, x, y, params, previous = trained_point(n_images, args.epochs)
    E = make_error_fn(model, (x, y), "ce")
    n = num_params(params)
    net = to_torch(model)
    crit = torch.nn.CrossEntropyLoss()
    X, Y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        l_t = float(crit(net(X), Y))
    l_j = float(eqx.filter_jit(lambda f, p: f(p))(E, params))
    assert abs(l_t - l_j) < 1e-5 * max(1.0, abs(l_j)), (l_t, l_j)
    flat_j = np.asarray(ravel_pytree(params)[0])
    flat_t = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).numpy()
    assert np.array_equal(flat_j, flat_t), "parameter order differs between the libraries"
    tparams = [p for p in net.parameters()]

    def Hv(v):
        return np.asarray(hvp_flat(E, params, jnp.asarray(v, jnp.float32)), np.float64)

    def residual(theta, vec, scale):
        v = np.asarray(vec, np.float64).reshape(-1)
        v = v / np.linalg.norm(v)
        return float(np.linalg.norm(Hv(v) - theta * v) / scale)

    # pilot: a long phaseprobe Lanczos run fixes the scale and the steps each end needs
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    lanczos(E, params, 1, num_iter=args.max_steps, key=0)
    first_lanczos = time.perf_counter() - t0
    start = jax.random.normal(jax.random.split(key)[0], (n,), jnp.float32)
    _, al, be = _lanczos_loss(E, params, jnp.zeros((n,), jnp.float32), start, jax.random.split(key)[1], args.max_steps)
    pilot = lanczos(E, params, 1, num_iter=args.max_steps, key=0)
    lam_max = pilot.max_eig
    m_top = steps_to_converge(al, be, args.tol, lam_max, "top")
    m_bot = steps_to_converge(al, be, args.tol, lam_max, "bottom")
    note(f"n={n_images}: lambda_max {lam_max:.5g}, lambda_min {pilot.min_eig:.4g} "
                 f"(pilot {args.max_steps} steps); steps to residual and agreement with the pilot's extreme "
                 f"{args.tol:g}*lambda_max: top {m_top}, bottom {m_bot}")
    # every timed run starts elsewhere: a margin over the pilot's count
    m_top, m_bot = (min(int(1.25 * m) + 2, args.max_steps) for m in (m_top, m_bot))

    # per-step cost: one HVP against one Lanczos step
    hvp_clock = Clock()
    v = jnp.ones((n,), jnp.float32)
    hvp_flat(E, params, v).block_until_ready()
    for _ in range(5):
        hvp_clock(lambda: hvp_flat(E, params, v).block_until_ready())

    # warm start along a path: the bottom eigenvector of a point one more epoch back
    for line in warm_start_study(args, n_images, E, params, previous, lam_max, n):
        note(line)

    def he_op():
        return he.HessianOperator(net, [(X, Y)], he.supervised_loss(crit))

    def cl_op():
        return curvlinops.HessianLinearOperator(net, crit, tparams, [(X, Y)], check_deterministic=False)

    def eigsh_end(which, tol):
        H = cl_op()
        count = [0]

        def mv(u):
            count[0] += 1
            return (H @ torch.from_numpy(np.asarray(u, np.float32).reshape(-1))).numpy()

        op = LinearOperator((n, n), matvec=mv, dtype=np.float32)
        vals, vecs = eigsh(op, k=1, which=which, tol=tol, v0=np.ones(n, np.float32))
        return float(vals[0]), vecs[:, 0], count[0]

    rows = []

    def row(target, library, method, clock, value, resid, matvecs, first=None):
        rows.append(dict(n_images=n_images, n_params=n, target=target, library=library, method=method,
                         t=clock.median, cpu=statistics.median(clock.cpu), load=clock.load, value=value, resid=resid, matvecs=matvecs, first=first))
        r = rows[-1]  # as soon as measured: a run cut short still leaves its rows
        print(f"  n={n_images} {target}: {library} {method}: {value if isinstance(value, str) else f'{value:.5g}'}, "
              f"residual/rel.SE {'-' if resid is None else f'{resid:.1e}'}, wall {r['t']:.3f} s, CPU {r['cpu']:.3f} s",
              flush=True)

    # ---- eigenvalues --------------------------------------------------------------------------
    for end, m, which in (("top", m_top, "LA"), ("bottom", m_bot, "SA")):
        target = f"{end} eigenvalue"
        cp, ce, cs = Clock(), Clock(), Clock()
        t0 = time.perf_counter()
        lanczos(E, params, 1, num_iter=m, key=0)
        first = time.perf_counter() - t0
        res_p = res_e = res_s = None
        theta_s = lam_max if end == "top" else pilot.min_eig
        eig_tol = max(args.tol * lam_max / max(abs(theta_s), 1e-12), 1e-7)
        for r in range(args.repeats):
            res_p = cp(lambda: lanczos(E, params, 1, num_iter=m, key=r + 1))
            res_e = ce(lambda: he.lanczos(he_op(), k=1, max_iter=m, which=which, reorthogonalize=True, seed=r + 1))
            res_s = cs(lambda: eigsh_end(which, eig_tol))
        if end == "top":
            tp, vp = res_p.max_eig, res_p.largest_vectors[0]
        else:
            tp, vp = res_p.min_eig, res_p.smallest_vectors[0]
        row(target, "phaseprobe", f"Lanczos {m} steps", cp, tp, residual(tp, vp, lam_max), m, first)
        te, ve = float(res_e.eigenvalues[0]), res_e.eigenvectors[0].numpy()
        row(target, "hessian-eigenthings", f"Lanczos {m} steps, reorth", ce, te, residual(te, ve, lam_max), m)
        row(target, "curvlinops", f"scipy eigsh {which}, tol {eig_tol:.1e}", cs, res_s[0],
            residual(res_s[0], res_s[1], lam_max), res_s[2])
        if end == "top":
            cph = Clock()
            out = None
            for _ in range(args.repeats):
                out = cph(lambda: PyHessian(net, crit, data=(X, Y), cuda=False).eigenvalues(
                    maxIter=args.power_iters, tol=args.power_tol, top_n=1))
            vals, vecs = out
            vec = torch.cat([t.reshape(-1) for t in vecs[0]]).numpy()
            row(target, "PyHessian", f"power iteration (tol {args.power_tol:g}, <= {args.power_iters})", cph,
                float(vals[0]), residual(float(vals[0]), vec, lam_max), None)

    # ---- trace --------------------------------------------------------------------------------
    hutch_plus_plus(E, params, 90, key=0)
    pil = hutch_plus_plus(E, params, 90, key=1)
    budget = int(min(args.max_trace_matvecs, max(12, 6 * int(np.ceil(trace_matvecs_for(args.trace_se, pil) / 6)))))
    note(f"n={n_images}: trace budget {budget} products for {args.trace_se:.0%} relative SE "
                 f"(pilot Hutch++ 90 products: {pil.estimate:.4g} +- {pil.se:.2g})")
    t0 = time.perf_counter()
    hutch_plus_plus(E, params, budget, key=0)
    first_hpp = time.perf_counter() - t0
    t0 = time.perf_counter()
    xtrace(E, params, budget, key=0)
    first_xt = time.perf_counter() - t0
    hutchinson(E, params, args.hutchinson_probes, key=0)
    c = {k: Clock() for k in ("hpp", "xt", "he", "clh", "clx", "hut", "ph")}
    out = {}
    for r in range(args.repeats):
        out["hpp"] = c["hpp"](lambda: hutch_plus_plus(E, params, budget, key=r + 1))
        out["xt"] = c["xt"](lambda: xtrace(E, params, budget, key=r + 1))
        out["he"] = c["he"](lambda: he.hutch_plus_plus(he_op(), num_matvecs=budget, seed=r + 1))
        out["clh"] = c["clh"](lambda: float(curvlinops.hutchpp_trace(cl_op(), budget)))
        out["clx"] = c["clx"](lambda: float(curvlinops.xtrace(cl_op(), budget)))
        if n_images <= args.hutchinson_max_images:
            out["hut"] = c["hut"](lambda: hutchinson(E, params, args.hutchinson_probes, key=r + 1))
            out["ph"] = c["ph"](lambda: np.asarray(PyHessian(net, crit, data=(X, Y), cuda=False).trace(
                maxIter=args.hutchinson_probes, tol=float("-inf"))))
    ref = out["hpp"]
    row("trace", "phaseprobe", f"Hutch++ {budget}", c["hpp"], f"{ref.estimate:.4g} +- {ref.se:.2g}", ref.rel_se, budget, first_hpp)
    xt = out["xt"]
    row("trace", "phaseprobe", f"XTrace {budget}", c["xt"], f"{xt.estimate:.4g} +- {xt.se:.2g}", xt.rel_se, budget, first_xt)
    heo = out["he"]
    row("trace", "hessian-eigenthings", f"Hutch++ {budget}", c["he"], f"{heo.estimate:.4g} +- {heo.stderr:.2g}",
        heo.stderr / abs(heo.estimate), budget)
    row("trace", "curvlinops", f"Hutch++ {budget}", c["clh"], f"{out['clh']:.4g}", None, budget)
    row("trace", "curvlinops", f"XTrace {budget}", c["clx"], f"{out['clx']:.4g}", None, budget)
    agree = [abs(v - ref.estimate) <= 4 * np.hypot(ref.se, max(ref.se, xt.se))
             for v in (xt.estimate, heo.estimate, out["clh"], out["clx"])]
    note(f"n={n_images}: trace estimates agree with phaseprobe's Hutch++ within 4 SE: {all(agree)}")
    if "hut" in out:
        hut = out["hut"]
        scale = (hut.tr_H_se / abs(hut.tr_H) / args.trace_se) ** 2   # time for the target SE
        ph = out["ph"]
        ph_se = float(ph.std(ddof=1) / np.sqrt(len(ph)))
        ph_scale = (ph_se / abs(float(ph.mean())) / args.trace_se) ** 2
        for lib, clock, est, se, sc in (("phaseprobe", c["hut"], hut.tr_H, hut.tr_H_se, scale),
                                        ("PyHessian", c["ph"], float(ph.mean()), ph_se, ph_scale)):
            scaled = Clock()
            scaled.wall = [w * sc for w in clock.wall]
            scaled.cpu = [w * sc for w in clock.cpu]
            row("trace", lib, f"Hutchinson {args.hutchinson_probes} probes, time x{sc:.1f} to {args.trace_se:.0%} SE",
                scaled, f"{est:.4g} +- {se:.2g}", se / abs(est), int(round(args.hutchinson_probes * sc)))

    note(f"n={n_images}: CPU time of one Hessian-vector product {1e3 * statistics.median(hvp_clock.cpu):.1f} ms; "
         f"of one Lanczos step {1e3 * rows[0]['cpu'] / m_top:.1f} ms ({m_top} steps, reorthogonalisation included); "
                 f"first Lanczos call {first_lanczos:.1f} s (compile)")
    return rows, notes


def warm_start_study(args, n_images, E, params, previous, lam_max, n) -> list[str]:
    """Lanczos steps for the bottom eigenvalue from a random start, from a warm start (the bottom
    Ritz vector at the previous point of the training path: the weights one epoch earlier), and
    with a uniform spectral shift (Krylov spaces are shift-invariant: expected the same)."""
    from phaseprobe.geometry import lanczos
    from phaseprobe.geometry.lanczos import _lanczos_loss

    prev = lanczos(E, previous, 1, num_iter=args.max_steps, key=5)
    key = jax.random.PRNGKey(3)
    zero = jnp.zeros((n,), jnp.float32)
    out = []
    for name, v0, sh in (("random start", jax.random.normal(key, (n,), jnp.float32), zero),
                         ("warm start (bottom Ritz vector one epoch earlier)", jnp.asarray(prev.smallest_vectors[0], jnp.float32), zero),
                         ("random start, shift +lambda_max", jax.random.normal(key, (n,), jnp.float32), zero + lam_max)):
        _, al, be = _lanczos_loss(E, params, sh, v0, key, args.max_steps)
        al = np.asarray(al) - float(sh[0])
        steps = steps_to_converge(al, be, args.tol, lam_max, "bottom")
        out.append(f"n={n_images}: bottom eigenvalue, {name}: {steps if steps <= args.max_steps else '>' + str(args.max_steps)} steps")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--epochs", type=int, default=2, help="Adam epochs before measuring (the trained point)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--core", type=int, default=0, help="the one core every library runs on (-1: no pinning)")
    ap.add_argument("--tol", type=float, default=1e-3, help="eigen-residual target, relative to lambda_max")
    ap.add_argument("--max-steps", type=int, default=120, help="pilot Lanczos steps (and the most any run takes)")
    ap.add_argument("--power-iters", type=int, default=100)
    ap.add_argument("--power-tol", type=float, default=1e-4)
    ap.add_argument("--trace-se", type=float, default=0.01, help="target relative standard error of the trace")
    ap.add_argument("--max-trace-matvecs", type=int, default=600)
    ap.add_argument("--hutchinson-probes", type=int, default=200)
    ap.add_argument("--hutchinson-max-images", type=int, default=1000, help="plain Hutchinson rows only up to this size")
    args = ap.parse_args(argv)
    import torch

    warnings.filterwarnings("ignore", category=UserWarning)  # PyHessian's create_graph notice
    torch.set_num_threads(1)
    aff = sorted(os.sched_getaffinity(0))
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} ({torch.get_num_threads()} thread); "
          f"process pinned to cores {aff}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"MLP 784-128-128-10 sigmoid, Fashion-MNIST, full-batch mean cross-entropy")
    rows, notes = [], []
    for s in args.sizes:
        r, nt = bench_size(s, args)
        rows += r
        notes += nt
    print()
    print("| images | target | library | method | value | residual / rel. SE | products | wall s (first) | CPU s | CPU s / wall s "
          "| fastest peer / this (wall) | (CPU) |")
    print("|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    ratios, cpu_ratios = [], []
    for s in args.sizes:
        for target in TARGETS:
            sel = [r for r in rows if r["n_images"] == s and r["target"] == target]
            peers = [r for r in sel if r["library"] != "phaseprobe"]
            fastest = min(r["t"] for r in peers) if peers else float("nan")
            fastest_cpu = min(r["cpu"] for r in peers) if peers else float("nan")
            for r in sel:
                val = r["value"] if isinstance(r["value"], str) else f"{r['value']:.5g}"
                res = "-" if r["resid"] is None else f"{r['resid']:.1e}"
                first = "" if r["first"] is None else f" ({r['first']:.1f})"
                prod = "-" if r["matvecs"] is None else str(r["matvecs"])
                ratio = fastest / r["t"]
                print(f"| {s} | {target} | {r['library']} | {r['method']} | {val} | {res} | {prod} | {r['t']:.3f}{first} "
                      f"| {r['cpu']:.3f} | {r['load']:.2f} | {ratio:.2f}x | {fastest_cpu / r['cpu']:.2f}x |")
            best = min((r for r in sel if r["library"] == "phaseprobe"), key=lambda r: r["t"], default=None)
            if best is not None and peers:
                ratios.append(f"{target} n={s}: {fastest / best['t']:.2f}x")
                best_cpu = min((r for r in sel if r["library"] == "phaseprobe"), key=lambda r: r["cpu"])
                cpu_ratios.append(f"{target} n={s}: {fastest_cpu / best_cpu['cpu']:.2f}x")
    print()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("ratios (fastest peer wall time / fastest phaseprobe wall time): " + "; ".join(ratios))
    print("ratios (the same in CPU seconds of the pinned process): " + "; ".join(cpu_ratios))


if __name__ == "__main__":
    main()
