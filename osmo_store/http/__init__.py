"""Layer 6: ``osmo serve`` over HTTP. ``protocol`` (routes, headers, limits, records, error
codes) is shared by the client backend (``client``) and the server (``app``: the WSGI app,
``serve``: running it); ``auth`` holds the bearer-token handling both sides use. The server
modules import nothing from ``client``."""
