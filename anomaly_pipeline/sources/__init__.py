"""Source adapters: each turns one kind of input into the canonical event table (see ``anomaly_pipeline.schema``)."""
