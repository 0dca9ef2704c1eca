"""Layer 5: keeping a store healthy: reachability, fsck, gc, repack."""

# gc's defaults, here so that the command line can show them without loading gc. Safety
# for concurrent writers comes from leases and freshening, not from age: by default gc
# frees everything unreachable now.
DEFAULT_PRUNE = "now"
DEFAULT_REFLOG_EXPIRE = "90.days.ago"
