#!/usr/bin/env bash
# Regenerates the figures in docs/ from the specs in examples/ (one group per argument).
#
#   bash docs/figures.sh sweep-fmnist     # sweep_onset_depth{1,2,3}, sweep_classes_2_5_10, sweep_loop_fmnist*
#   bash docs/figures.sh authors          # sweep_authors_fmnist* (all 60k images, coarse grid + refinement)
#   bash docs/figures.sh dln escape grok  # the deep-linear, escape and grokking figures
#   bash docs/figures.sh features grok-extra paths   # feature counting, the other grokking specs,
#                                                    # the L2 probe (toy, connect, benchmark)
#   bash docs/figures.sh paths-full       # the probe toward w_ref = 0 on all of Fashion-MNIST
#   bash docs/figures.sh grok-noise       # grokking delay against the Langevin temperature (CSV tables)
#   bash docs/figures.sh escape-mlp       # the MLP escape figures (Langevin, SGD, lower temperatures)
#
# Runs go to ${RUNS:-runs/docs}/<name>/ (resumable: rerunning a group reuses what is stored), and each
# figure is copied from its run folder into docs/. Every run's report.html says what it found.
set -euo pipefail
cd "$(dirname "$0")/.."
PP=${PHASEPROBE:-.venv/bin/phaseprobe}
RUNS=${RUNS:-runs/docs}
mkdir -p "$RUNS"

sweep_fmnist() {
  for d in 1 2 3; do
    $PP sweep --spec examples/fmnist_onset_depth.toml --set depth=$d --out "$RUNS/onset-depth$d"
    cp "$RUNS/onset-depth$d/sweep.png" docs/sweep_onset_depth$d.png
  done
  for k in 2 5 10; do
    $PP sweep --spec examples/fmnist_classes.toml --set classes=$k --out "$RUNS/classes-$k"
  done
  $PP compare "$RUNS/classes-2" "$RUNS/classes-5" "$RUNS/classes-10" --out "$RUNS/classes-2-5-10"
  cp "$RUNS/classes-2-5-10/compare.png" docs/sweep_classes_2_5_10.png
  $PP sweep --spec examples/fmnist_loop.toml --out "$RUNS/fmnist-loop"
  cp "$RUNS/fmnist-loop/sweep.png" docs/sweep_loop_fmnist.png
  cp "$RUNS/fmnist-loop/classes.png" docs/sweep_loop_fmnist_classes.png
}

authors() {
  $PP sweep --spec examples/authors_fmnist_refined.toml --out "$RUNS/authors-fmnist-refined"
  cp "$RUNS/authors-fmnist-refined/sweep.png" docs/sweep_authors_fmnist.png
  cp "$RUNS/authors-fmnist-refined/classes.png" docs/sweep_authors_fmnist_classes.png
  $PP sweep --spec examples/authors_fmnist_fine_stretch.toml --set start_from.run="$RUNS/authors-fmnist-refined" \
     --out "$RUNS/authors-fmnist-fine-stretch"
}

dln() {
  $PP dln --out "$RUNS/dln"
  $PP dln --phase-diagram --out "$RUNS/dln-grid"
  $PP dln --escape --out "$RUNS/dln-escape"
  cp "$RUNS/dln/dln_saddle_to_saddle.png" "$RUNS/dln-grid/dln_phase_diagram.png" \
     "$RUNS/dln-escape/dln_escape_times.png" docs/
}

escape() {
  $PP escape --out "$RUNS/escape"
  cp "$RUNS/escape/escape_arrhenius.png" "$RUNS/escape/escape_survival.png" docs/
}

escape_mlp() {  # the MLP escape: Langevin at T = barrier/1..4, SGD, and two lower-temperature runs
  $PP escape --system mlp --out "$RUNS/escape-mlp"
  cp "$RUNS/escape-mlp/escape_survival.png" docs/escape_mlp_langevin_survival.png
  cp "$RUNS/escape-mlp/escape_arrhenius.png" docs/escape_mlp_langevin_arrhenius.png
  $PP escape --system mlp --noise sgd --out "$RUNS/escape-mlp-sgd"
  cp "$RUNS/escape-mlp-sgd/escape_survival.png" docs/escape_mlp_sgd_survival.png
  cp "$RUNS/escape-mlp-sgd/escape_arrhenius.png" docs/escape_mlp_sgd_arrhenius.png
  $PP escape --system mlp --barrier-ratios 4,8,16,32 --steps 6000 --out "$RUNS/escape-mlp-lowT"
  cp "$RUNS/escape-mlp-lowT/escape_arrhenius.png" docs/escape_mlp_langevin_lowT_arrhenius.png
  $PP escape --system mlp --barrier-ratios 32,64,128,256 --steps 40000 --out "$RUNS/escape-mlp-lowT2"
  cp "$RUNS/escape-mlp-lowT2/escape_arrhenius.png" docs/escape_mlp_langevin_lowT2_arrhenius.png
}

grok() {
  $PP grok --out "$RUNS/grok"
  cp "$RUNS/grok/grok_curves.png" "$RUNS/grok/grok_delay.png" "$RUNS/grok/grok_phase.png" \
     "$RUNS/grok/grok_hysteresis.png" "$RUNS/grok/grok_geometry.png" docs/
}

grok_extra() {
  $PP grok --spec examples/grok_quick.toml --out "$RUNS/grok-quick"
  cp "$RUNS/grok-quick/grok_hysteresis.png" docs/grok_quick_hysteresis.png
  $PP grok --spec examples/grok_geometry_exact.toml --out "$RUNS/grok-exact"
  cp "$RUNS/grok-exact/grok_geometry.png" docs/grok_geometry_exact.png
  $PP grok --spec examples/grok_p97.toml --out "$RUNS/grok-p97"
  cp "$RUNS/grok-p97/grok_curves.png" docs/grok_p97_curves.png
}

features() {
  $PP sweep --spec examples/feature_count.toml --out "$RUNS/feature-count"
  ${PYTHON:-.venv/bin/python} - "$RUNS/feature-count" <<'PY'
import sys
from phaseprobe.escape.features import feature_count_figure, feature_table
run = sys.argv[1]
feature_count_figure(feature_table(run), [2.0, 1.4, 1.0], 3, "docs/feature_count.png")
PY
}

grok_noise() {  # the grokking delay against the Langevin temperature (tables only; about 5 min)
  mkdir -p "$RUNS/grok-noise"
  ${PYTHON:-.venv/bin/python} - "$RUNS/grok-noise" <<'PY'
import sys
from phaseprobe.grokking.noise import grok_noise_delays
out = sys.argv[1]
for alpha, temps in ((3e-3, (0.0, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)), (2e-3, (0.0, 1e-4, 3e-4, 1e-3))):
    df = grok_noise_delays(temperatures=temps, seeds=2, alpha=alpha, steps=20000, check_every=50)
    df.to_csv(f"{out}/delays_alpha{alpha:g}.csv", index=False)
    print(df[["temperature", "seed", "t_train", "t_test", "delay", "final_test_acc", "final_w_sq"]].to_string())
PY
}

paths() {
  ${PYTHON:-.venv/bin/python} benchmarks/bench_paths.py --toy --out "$RUNS/paths-toy"
  cp "$RUNS/paths-toy/paths_toy2d.png" docs/
  $PP connect --spec examples/connect_fashion.toml --out "$RUNS/connect-fashion"
  cp "$RUNS/connect-fashion/paths.png" docs/paths_connect_fashion.png
  cp "$RUNS/connect-fashion/probe.png" docs/paths_probe_connect_fashion.png
  ${PYTHON:-.venv/bin/python} benchmarks/bench_paths.py --out "$RUNS/paths-bench"
  cp "$RUNS/paths-bench/bench_paths.png" docs/paths_bench.png
}

paths_full() {  # all 60 000 Fashion-MNIST images: about 50 min on 2 cores
  $PP basins --spec examples/probe_fashion_full.toml --out "$RUNS/probe-fashion-full"
  cp "$RUNS/probe-fashion-full/probe.png" docs/paths_probe_fashion_full.png
  cp "$RUNS/probe-fashion-full/basins.png" docs/paths_basins_fashion_full.png
}

for group in "$@"; do
  case "$group" in
    sweep-fmnist) sweep_fmnist ;;
    authors) authors ;;
    dln) dln ;;
    escape) escape ;;
    grok) grok ;;
    grok-extra) grok_extra ;;
    features) features ;;
    grok-noise) grok_noise ;;
    escape-mlp) escape_mlp ;;
    paths) paths ;;
    paths-full) paths_full ;;
    *) echo "docs/figures.sh: unknown group '$group'; use sweep-fmnist, authors, dln, escape, grok, grok-extra, grok-noise, escape-mlp, features, paths or paths-full" >&2; exit 2 ;;
  esac
done
