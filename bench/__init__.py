"""chaosbus benchmarks: how fast a fault lands and leaves, at 1 to 1,000 targets over
several node injectors, against the physical floor measured in the same run. Run `make bench`
or `python -m bench [--quick]`; see docs/benchmarks.md for the method.
"""
