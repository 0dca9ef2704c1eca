"""The Python API for scripts and notebooks: run an eval (``run``), read stored results
(``result``). ``osmo_store`` exports these names; see docs/python.md."""
