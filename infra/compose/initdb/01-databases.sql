-- Dagster and MLflow each keep an alembic_version table: one database each.
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
