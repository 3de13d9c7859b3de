"""Storage: S3/local object I/O (:mod:`.objects`), shard patterns and streaming, the run's work-dir layout."""
