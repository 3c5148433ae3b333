#!/usr/bin/env bash
# The GPU check of issue 13: on an offline machine that has JAX (with CUDA) but none of
# phaseprobe's other dependencies, install the bundle that benchmarks/make_device_bundle.sh built
# into a virtual environment that sees the machine's JAX, print the device and the versions, run
# benchmarks/bench_authors.py --quick (where it exists) and the authors' full Fashion-MNIST spec
# (examples/authors_fmnist_full.toml, `phaseprobe sweep --no-figures`), and write the tables, logs
# and wall times to one folder.
#
#   benchmarks/make_device_bundle.sh                      # here, once (PY_VERSION=3.12 for a 3.12 machine)
#   bash benchmarks/device_check.sh                       # there, from the checkout's root or anywhere
#
# Environment (all optional):
#   OUT                          results folder (default ./device-check-<UTC date-time>/)
#   PYTHON                       the python that has JAX (default python3)
#   DEVICE_BUNDLE                the bundle folder (default benchmarks/device_bundle)
#   DEVICE_CHECK_WORK            where the venv and the run store go (default $OUT/work when OUT
#                                is unset, else ${TMPDIR:-/tmp}/phaseprobe-device-check: only the
#                                tables and logs land in $OUT)
#   DEVICE_CHECK_SPEC            the sweep's spec (default examples/authors_fmnist_full.toml)
#   DEVICE_CHECK_SET             spec overrides, space-separated: "n_train=2000 epochs=1"
#   DEVICE_CHECK_SWEEP_TIMEOUT   stop the sweep after this many seconds (0: never); what is
#                                stored by then is analysed and the run resumes on a rerun
#   DEVICE_CHECK_BENCH_TIMEOUT   the same for bench_authors.py
#   DEVICE_CHECK_SKIP            steps to skip, space-separated: "bench", "sweep"
#
# The results folder holds summary.txt (device, versions, wall times, the benchmark's ratios
# line, the sweep's end), install.log, bench_authors.log, sweep.log and the sweep's
# transitions.csv, plateaus.csv and phase_times.json. Exit status: 0 when every step that ran
# succeeded, 1 when one failed (the others still run), 2 when the check could not start.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE=${DEVICE_BUNDLE:-$REPO/benchmarks/device_bundle}
STAMP=$(date -u +%Y%m%d-%H%M%S)
if [ -n "${OUT:-}" ]; then
  RESULTS=$OUT
  WORK=${DEVICE_CHECK_WORK:-${TMPDIR:-/tmp}/phaseprobe-device-check}
else
  RESULTS=$PWD/device-check-$STAMP
  WORK=${DEVICE_CHECK_WORK:-$RESULTS/work}
fi
PY=${PYTHON:-python3}
SPEC=${DEVICE_CHECK_SPEC:-$REPO/examples/authors_fmnist_full.toml}
SWEEP_TIMEOUT=${DEVICE_CHECK_SWEEP_TIMEOUT:-0}
BENCH_TIMEOUT=${DEVICE_CHECK_BENCH_TIMEOUT:-0}
SKIP=" ${DEVICE_CHECK_SKIP:-} "
SUMMARY=$RESULTS/summary.txt
STATUS=0

die() { echo "device_check: $*" >&2; exit 2; }
say() { echo "$*" | tee -a "$SUMMARY"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
with_timeout() {  # with_timeout SECONDS CMD...: the command, stopped after SECONDS (0: never)
  local t=$1; shift
  if [ "$t" != 0 ]; then timeout --signal=TERM --kill-after=30 "$t" "$@"; else "$@"; fi
}

# --- checks before anything is written or installed -------------------------------------------
[ -f "$BUNDLE/manifest.txt" ] || die "DEVICE_BUNDLE: $BUNDLE has no manifest.txt; run benchmarks/make_device_bundle.sh here and carry that folder"
[ -f "$SPEC" ] || die "DEVICE_CHECK_SPEC: $SPEC does not exist; pass a spec file"
[[ "$SWEEP_TIMEOUT" =~ ^[0-9]+$ && "$BENCH_TIMEOUT" =~ ^[0-9]+$ ]] || die "DEVICE_CHECK_*_TIMEOUT: not a whole number of seconds; e.g. 420"
command -v "$PY" >/dev/null 2>&1 || die "PYTHON: $PY not found; pass the python that has JAX"
"$PY" -c "import jax" 2>/dev/null || die "PYTHON: $PY cannot import jax; pass the python that has JAX (with CUDA)"
want=$(awk '$1 == "python" { print $2 }' "$BUNDLE/manifest.txt")
have=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
mkdir -p "$RESULTS" "$WORK" || die "OUT: cannot create $RESULTS or $WORK; pass a writable folder"
: >"$SUMMARY"
T0=$(now)
say "phaseprobe device check, $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
say "repository: $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
say "bundle: $BUNDLE (built for Python $want; this python: $PY = $have)"
[ "$want" = "$have" ] || say "note: the bundle's binary wheels are for Python $want; where this machine lacks one, the check stops and names it (PY_VERSION=$have benchmarks/make_device_bundle.sh builds the matching bundle)"

# --- 1. the virtual environment: the bundle's wheels in front of the machine's JAX ---------------
t=$(now)
VENV=$WORK/venv
rm -rf "$VENV"
# A python that is itself a virtual environment (the lent GPU machines' python3 is one) keeps
# its packages in its own site-packages, which --system-site-packages would not see: its
# site folders are then named in a .pth file instead.
in_venv=$("$PY" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
if [ "$in_venv" = 1 ]; then
  "$PY" -m venv --without-pip "$VENV" || die "venv: $PY -m venv failed; install python3-venv"
else
  "$PY" -m venv --system-site-packages --without-pip "$VENV" || die "venv: $PY -m venv failed; install python3-venv"
fi
VPY=$VENV/bin/python
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" - >"$SITE/zz-parent-site.pth" <<'EOF'
import sys
for p in sys.path:
    if p and ("site-packages" in p or "dist-packages" in p):
        print(p)
EOF
echo "$REPO/src" >"$SITE/00-phaseprobe-src.pth"
"$VPY" - "$BUNDLE" "$SITE" >"$RESULTS/install.log" 2>&1 <<'EOF'
"""Install the bundle's wheels that fit this interpreter into SITE; name the ones that do not and
whether the machine already has them."""
import glob, importlib.metadata as md, os, subprocess, sys, zipfile

bundle, site = sys.argv[1], sys.argv[2]
wheels = sorted(glob.glob(os.path.join(bundle, "wheels", "*.whl")))
try:
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # the bundle's own packaging wheel, imported from the zip
    sys.path[:0] = [w for w in wheels if os.path.basename(w).startswith("packaging-")]
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
tags = set(sys_tags())
fit, unfit = [], {}
for w in wheels:
    name, version, _, wtags = parse_wheel_filename(os.path.basename(w))
    (fit.append((name, version, w)) if wtags & tags else unfit.__setitem__(name, version))
if "pydantic-core" in unfit:  # pydantic pins pydantic-core exactly: both come from one place
    for n, v, w in [x for x in fit if x[0] == "pydantic"]:
        fit.remove((n, v, w))
        unfit[n] = v
try:  # pandas reads and writes Parquet with pyarrow where the machine has it: no fastparquet then
    import pyarrow  # noqa: F401
    spare = {"fastparquet", "cramjam", "fsspec"}
except ImportError:
    spare = set()
missing = []
for name, version in sorted(unfit.items()):
    try:
        print(f"system {name} {md.version(name)} (the bundle's {version} does not fit this python)")
    except md.PackageNotFoundError:
        if canonicalize_name(name) in spare:
            print(f"left out {name} {version}: does not fit this python, not needed (pyarrow is here)")
        else:
            missing.append(f"{name} {version}")
if missing:
    print("missing: " + ", ".join(missing))
    sys.exit(3)
files = [w for _, _, w in fit]
try:
    import pip  # noqa: F401
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--target", site, *files]
    subprocess.run(cmd, check=True)
    how = "pip"
except ImportError:  # no pip: a wheel is a zip laid out for site-packages
    for w in files:
        with zipfile.ZipFile(w) as z:
            for m in z.namelist():
                parts = m.split("/")
                if parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                        continue
                    m_out = "/".join(parts[2:])
                else:
                    m_out = m
                dest = os.path.join(site, m_out)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with z.open(m) as src, open(dest, "wb") as out:
                    out.write(src.read())
    how = "unzip"
for name, version, _ in fit:
    print(f"bundle {name} {version}")
print(f"installed {len(fit)} wheels with {how} into {site}")
EOF
rc=$?
if [ $rc -ne 0 ]; then
  cat "$RESULTS/install.log" >&2
  die "install: the bundle does not fit $PY (see $RESULTS/install.log); build it for Python $have: PY_VERSION=$have benchmarks/make_device_bundle.sh"
fi
tail -1 "$RESULTS/install.log" | tee -a "$SUMMARY"
grep -E '^(system|left out) ' "$RESULTS/install.log" | tee -a "$SUMMARY"
"$VPY" -c "import phaseprobe.cli" 2>>"$RESULTS/install.log" || die "install: phaseprobe does not import in $VENV (see $RESULTS/install.log)"
say "[install] wall $(since "$t") s"

# --- 2. the device and the versions ---------------------------------------------------------------
"$VPY" - 2>&1 <<'EOF' | tee -a "$SUMMARY"
import importlib.metadata as md, os, platform, sys
import jax
print(f"python {platform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs, {platform.platform()}")
print(f"jax.devices(): {jax.devices()}")
print(f"backend: {jax.default_backend()}" + ("" if jax.default_backend() != "cpu" else " (no accelerator seen by JAX)"))
names = ["jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "numpy", "scipy", "equinox", "optax",
         "pandas", "pyarrow", "fastparquet", "pydantic", "typer", "rich", "torch"]
vers = []
for n in names:
    try:
        vers.append(f"{n} {md.version(n)}")
    except md.PackageNotFoundError:
        pass
print("versions: " + ", ".join(vers))
try:
    import pyarrow  # noqa: F401
    engine = "pyarrow"
except ImportError:
    engine = "fastparquet"
print(f"parquet engine (pandas 'auto'): {engine}")
EOF
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/nvidia-smi: /' | tee -a "$SUMMARY"

# --- 3. bench_authors.py --quick ----------------------------------------------------------------------
BENCH=$REPO/benchmarks/bench_authors.py
if [[ "$SKIP" == *" bench "* ]]; then
  say "[bench_authors] skipped (DEVICE_CHECK_SKIP)"
elif [ ! -f "$BENCH" ]; then
  say "[bench_authors] skipped: $BENCH does not exist in this checkout"
else
  t=$(now)
  # the benchmark reads Fashion-MNIST from the Debian package's folder: point it at the bundle's copy
  (cd "$REPO" && PYTHONUNBUFFERED=1 with_timeout "$BENCH_TIMEOUT" "$VPY" -c '
import runpy, sys
import phaseprobe.data.images as images
images.FASHION_MNIST_DIR = sys.argv[1]
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")' "$BUNDLE/fashion-mnist" "$BENCH" --quick) 2>&1 | tee "$RESULTS/bench_authors.log"
  rc=${PIPESTATUS[0]}
  grep '^ratios:' "$RESULTS/bench_authors.log" | tail -1 | tee -a "$SUMMARY"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    STATUS=1; say "[bench_authors] stopped at DEVICE_CHECK_BENCH_TIMEOUT=$BENCH_TIMEOUT s; see bench_authors.log"
  elif [ $rc -ne 0 ]; then
    STATUS=1; say "[bench_authors] failed: exit status $rc; see bench_authors.log ($(tail -1 "$RESULTS/bench_authors.log"))"
  fi
  say "[bench_authors] wall $(since "$t") s"
fi

# --- 4. the authors' full spec ------------------------------------------------------------------------
if [[ "$SKIP" == *" sweep "* ]]; then
  say "[sweep] skipped (DEVICE_CHECK_SKIP)"
else
  RUN=$WORK/run
  rm -rf "$RUN"
  args=(sweep --spec "$SPEC" --no-figures --wide --data-dir "$BUNDLE/fashion-mnist" --out "$RUN")
  for kv in ${DEVICE_CHECK_SET:-}; do args+=(--set "$kv"); done
  say "[sweep] phaseprobe ${args[*]}"
  t=$(now)
  (cd "$REPO" && PYTHONUNBUFFERED=1 with_timeout "$SWEEP_TIMEOUT" "$VPY" -m phaseprobe.cli "${args[@]}") 2>&1 | tee "$RESULTS/sweep.log"
  rc=${PIPESTATUS[0]}
  wall=$(since "$t")
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    say "[sweep] stopped at DEVICE_CHECK_SWEEP_TIMEOUT=$SWEEP_TIMEOUT s; analysing what is stored (a rerun of the same command resumes)"
    "$VPY" - "$RUN" 2>&1 <<'EOF' | tee -a "$RESULTS/sweep.log" "$SUMMARY"
import sys
from pathlib import Path
from phaseprobe.sweep.summary import summarize
if not (Path(sys.argv[1]) / "spec.json").is_file():
    sys.exit("stored: nothing (the sweep had not made its run folder yet)")
res = summarize(sys.argv[1], figures=False)
df = res["records"]
fin = df[df["final"]] if len(df) else df
print(f"stored: {len(fin)} finished trainings, {fin['alpha'].nunique() if len(fin) else 0} strengths; "
      f"{len(res['transitions'])} transitions, {len(res['plateaus'])} plateaus on what is stored")
EOF
    STATUS=1
  elif [ $rc -ne 0 ]; then
    STATUS=1
    say "[sweep] failed: exit status $rc; see sweep.log"
  fi
  grep -E '^(done in|transitions|[0-9]+/[0-9]+ converged)' "$RESULTS/sweep.log" | tee -a "$SUMMARY"
  for f in transitions.csv plateaus.csv phase_times.json; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$RESULTS/"; done
  say "[sweep] wall $wall s (the run store: $RUN)"
fi

say "[device check] wall $(since "$T0") s; results in $RESULTS"
exit $STATUS
