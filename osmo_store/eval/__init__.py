"""Layer 7: evals on the store."""
