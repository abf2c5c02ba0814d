"""The performance benchmark: ``python -m bench.run`` (``make bench``) measures the pipeline.

Every figure is a ratio of two things measured side by side in the same run, repeated and
reduced to its median, so that other work on a shared machine moves it little.
"""
