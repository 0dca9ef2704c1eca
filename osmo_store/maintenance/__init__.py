"""Layer 5: keeping a store healthy: reachability, fsck, gc, repack."""
