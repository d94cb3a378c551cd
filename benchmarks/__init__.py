"""ml_adv benchmark harness: ``python -m benchmarks.run`` (see run.py and harness.py)."""
