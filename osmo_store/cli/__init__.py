"""Layer 8: the ``osmo`` command line. Parses, calls the library, formats output, and
maps errors to exit codes in one place (``main``)."""
