"""Helpers the tests and the benchmarks share: starting the app, driving chromium, and reporting
benchmark figures against their bars. Not needed to run the app."""
