"""Jobs over the asset graph.

The training graph (raw_events ... registered_model, drift_report) is unpartitioned; the daily
scoring path (daily_events, scored_events / alerts, daily_drift_report) is partitioned by day and
reads the champion from the registry, so the two never share a job.
"""


import dagster as dg

from anomaly_pipeline import settings

DAILY_SCORING = dg.AssetSelection.groups("daily_scoring")
TRAINING = dg.AssetSelection.all() - DAILY_SCORING

full_pipeline_job = dg.define_asset_job(
    "full_pipeline_job",
    selection=TRAINING,
    description="The training graph: ingestion, validation, graph windows, training, evaluation, registration, drift.",
    tags=settings.TRAINING_RUN_TAGS,  # one training run at a time (the instance's tag limit)
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    # From raw_events: a retrain triggered by drift or new data must see the newest events.
    selection=TRAINING,
    description="Re-read the source, rebuild graph windows, retrain, evaluate, register (challenger; champion "
    "only if the gate passes and it beats the champion), re-check drift.",
    # On Kubernetes (infra/helm) these tags put the run on the GPU node pool: one nvidia.com/gpu, the
    # pool's node selector and toleration (settings.GPU_RUN_TAGS); locally they are inert.
    tags={"compute": "gpu-preferred", "dagster/priority": "5", **settings.TRAINING_RUN_TAGS, **settings.GPU_RUN_TAGS},
)

daily_scoring_job = dg.define_asset_job(
    "daily_scoring_job",
    selection=DAILY_SCORING,
    description="One day: validate its events, score them with @champion, write alerts, measure drift.",
)
