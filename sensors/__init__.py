"""Jobs, schedules and sensors: full pipeline, daily scoring, drift-triggered, new-data and periodic
retraining, alerts for failed runs and quality gates, and an in-process tick runner (``ticks``)."""
