"""The risk engine: pure, deterministic, no Kafka. Per-key state, features, River model
adapters, limits, the trading-state machine, alerts and explanations, VaR validation, and
the in-process driver that runs a recorded stream through any processor."""
