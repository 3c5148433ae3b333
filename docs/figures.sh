#!/usr/bin/env bash
# Regenerates the figures in docs/ from the specs in examples/ (one group per argument).
#
#   bash docs/figures.sh sweep-fmnist     # sweep_onset_depth{1,2,3}, sweep_classes_2_5_10, sweep_loop_fmnist*
#   bash docs/figures.sh authors          # sweep_authors_fmnist* (all 60k images, coarse grid + refinement)
#   bash docs/figures.sh dln escape grok  # the deep-linear, escape and grokking figures
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

grok() {
  $PP grok --out "$RUNS/grok"
  cp "$RUNS/grok/grok_curves.png" "$RUNS/grok/grok_delay.png" "$RUNS/grok/grok_phase.png" docs/
}

for group in "$@"; do
  case "$group" in
    sweep-fmnist) sweep_fmnist ;;
    authors) authors ;;
    dln) dln ;;
    escape) escape ;;
    grok) grok ;;
    *) echo "docs/figures.sh: unknown group '$group'; use sweep-fmnist, authors, dln, escape or grok" >&2; exit 2 ;;
  esac
done
