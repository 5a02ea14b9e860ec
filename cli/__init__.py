"""The ``fibers`` command line."""
