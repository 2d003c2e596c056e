"""Benchmarks of scrapy-gateway: crawl scenarios (run.py), core micro-benchmarks (micro.py) and
the end-to-end overhead of an all-success crawl (overhead.py). Not part of the test run."""
