"""emotionq benchmarks: ``python -m benchmarks [--only NAME ...] [--quick]`` (``make bench``).

Every figure is a ratio against a baseline measured in the same run, printed as a
table and written to ``var/bench/results-<UTC>.json`` and ``var/bench/latest.json``.
"""
