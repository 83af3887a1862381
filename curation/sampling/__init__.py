"""Stage 5: the keep-rank sampling order, its fidelity, and saved subsets."""
