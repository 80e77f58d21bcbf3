"""authsvc throughput benchmark (not a test): `bench/run` or `python -m bench`. See docs/performance.md."""
