"""Layer 6: moving objects and refs between stores, and the remotes a store knows."""
