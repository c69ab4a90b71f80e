"""The ``alize`` command line (Typer)."""
