"""Run plumbing every layer may use: errors shown as one line, run files, a checkpoint's run
record and reading it, resuming a run as recorded, the one schema of ``metrics.json``, the
machine's CPUs. It imports nothing of the package outside ``runs/``."""
