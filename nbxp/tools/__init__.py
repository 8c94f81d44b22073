"""Debugging and comparison tools: ``nbxp-compare`` (two programs, one command line, image
statistics) and ``nbxp-trace-diff`` (two ``-trace_pixel`` logs, quantity by quantity)."""
