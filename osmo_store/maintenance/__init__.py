"""Layer 5: keeping a store healthy: reachability, fsck, gc, repack."""

# gc's defaults, here so that the command line can show them without loading gc
DEFAULT_PRUNE = "2.weeks.ago"
DEFAULT_REFLOG_EXPIRE = "90.days.ago"
