"""Layer 6: the HTTP wire protocol, its client backend and the server (osmo serve)."""
