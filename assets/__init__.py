"""The Dagster asset layer: thin functions that read like the asset graph and call anomaly_pipeline."""
