"""Jobs, schedules and sensors: full pipeline, drift-triggered and periodic retraining."""
