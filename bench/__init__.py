"""The benchmark: ``python -m bench.accuracy`` (``make bench``), accuracy per CPU-minute."""
