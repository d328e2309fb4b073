"""The `streamrisk` command line: the composition root, the only place that wires schemas,
engine, producers and consumers together. One module per command under this package."""
