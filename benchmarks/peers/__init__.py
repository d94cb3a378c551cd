"""Peers the harness compares ml_adv with: plain Flax (always) and PyTorch eager (the ``bench``
extra)."""
