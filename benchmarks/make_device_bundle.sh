#!/usr/bin/env bash
# Build the folder that benchmarks/device_check.sh carries to an offline GPU machine: the wheels
# of every package the `phaseprobe sweep --no-figures` path imports beyond JAX's own (jax,
# jaxlib, numpy, scipy, ml_dtypes, opt_einsum come with any JAX install) and the four
# Fashion-MNIST IDX files, in one folder under 64 MB.
#
#   benchmarks/make_device_bundle.sh [DEST]          (default DEST: benchmarks/device_bundle, git-ignored)
#   benchmarks/make_device_bundle.sh --pins          print the pinned wheels (name==version) and stop
#
# Environment:
#   PY_VERSION   Python of the GPU machine, for the binary wheels (pandas, pydantic_core,
#                fastparquet, cramjam): default 3.11. The lent H100/H200 machines run 3.12.
#   FMNIST_DIR   folder with the four *-ubyte.gz files (default /usr/share/datasets/fashion-mnist)
#   PIP          the pip that downloads (default: .venv/bin/python -m pip, else python3 -m pip)
#   LIMIT_BYTES  the size the bundle must stay under (default 64000000)
#
# Left out on purpose: matplotlib (figures only; the check runs --no-figures), plotly,
# scikit-learn (the digits dataset only), ray (--engine ray only), torch, and pyarrow (55 MB):
# pandas writes and reads the run store's Parquet pieces with fastparquet when pyarrow is
# absent (both write standard Parquet), and uses pyarrow where the machine already has it.
# Versions are the ones of requirements.lock; the three Parquet packages, not in the lock, are
# pinned here.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-$REPO/benchmarks/device_bundle}
PY_VERSION=${PY_VERSION:-3.11}
FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
LIMIT_BYTES=${LIMIT_BYTES:-64000000}
if [ -n "${PIP:-}" ]; then
  read -r -a PIPCMD <<<"$PIP"
elif [ -x "$REPO/.venv/bin/python" ]; then
  PIPCMD=("$REPO/.venv/bin/python" -m pip)
else
  PIPCMD=(python3 -m pip)
fi

# distributions from requirements.lock (name as the lock spells it)
LOCKED=(
  equinox jaxtyping wadler_lindig optax absl-py          # models and optimisers
  typer annotated-doc shellingham rich Pygments markdown-it-py mdurl   # the command line
  pydantic pydantic_core annotated-types typing-inspection typing_extensions   # specs
  pandas python-dateutil tzdata packaging                # records and tables
)
# pandas' Parquet engine in place of pyarrow (not in requirements.lock)
EXTRA=(fastparquet==2026.9.0 cramjam==2.14.0 fsspec==2026.9.0)

die() { echo "make_device_bundle: $*" >&2; exit 2; }
[[ "$PY_VERSION" =~ ^3\.[0-9]+$ ]] || die "PY_VERSION: '$PY_VERSION' is not like 3.11; pass the GPU machine's python3 version"
[ -f "$REPO/requirements.lock" ] || die "requirements.lock: missing in $REPO; run from a phaseprobe checkout"

pins=()
for name in "${LOCKED[@]}"; do
  line=$(grep -i -E "^${name//[-_]/[-_]}==" "$REPO/requirements.lock" || true)
  [ -n "$line" ] || die "requirements.lock: no pin for $name; add it or drop it from LOCKED in $0"
  pins+=("$line")
done
pins+=("${EXTRA[@]}")
if [ "${1:-}" = "--pins" ]; then printf '%s\n' "${pins[@]}"; exit 0; fi

for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -f "$FMNIST_DIR/$f.gz" ] || die "FMNIST_DIR: $FMNIST_DIR lacks $f.gz; apt-get install dataset-fashion-mnist or set FMNIST_DIR"
done

rm -rf "$DEST/wheels" "$DEST/fashion-mnist"
mkdir -p "$DEST/wheels" "$DEST/fashion-mnist"
"${PIPCMD[@]}" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$DEST/wheels" "${pins[@]}"
cp "$FMNIST_DIR"/*-ubyte.gz "$DEST/fashion-mnist/"

n=$(find "$DEST/wheels" -name '*.whl' | wc -l)
[ "$n" -eq "${#pins[@]}" ] || die "wheels: $n downloaded for ${#pins[@]} pins; look for two versions of one package in $DEST/wheels"
{
  echo "# phaseprobe device bundle: made $(date -u +%Y-%m-%dT%H:%M:%SZ) by benchmarks/make_device_bundle.sh"
  echo "python $PY_VERSION"
  printf 'pin %s\n' "${pins[@]}"
  (cd "$DEST" && find wheels fashion-mnist -type f | sort | while read -r f; do echo "file $f $(stat -c %s "$f")"; done)
} >"$DEST/manifest.txt"
total=$(du -sb "$DEST" | cut -f1)
wheels=$(du -sb "$DEST/wheels" | cut -f1)
data=$(du -sb "$DEST/fashion-mnist" | cut -f1)
echo "total $total" >>"$DEST/manifest.txt"
awk -v d="$DEST" -v n="$n" -v w="$wheels" -v f="$data" -v t="$total" -v l="$LIMIT_BYTES" -v py="$PY_VERSION" 'BEGIN {
  printf "device bundle %s: %d wheels %.1f MB + Fashion-MNIST %.1f MB = %.1f MB (limit %.1f MB), for Python %s\n", d, n, w/1e6, f/1e6, t/1e6, l/1e6, py }'
[ "$total" -lt "$LIMIT_BYTES" ] || die "size: $total bytes is over the limit $LIMIT_BYTES; drop a wheel or the data"
