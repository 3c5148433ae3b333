"""Deep-linear training dynamics: init-scale phases, rank trajectories, plateaus and saddles."""
