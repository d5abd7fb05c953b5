"""Jobs over the asset graph."""


import dagster as dg

full_pipeline_job = dg.define_asset_job(
    "full_pipeline_job",
    selection=dg.AssetSelection.all(),
    description="Every asset: ingestion, validation, graph windows, training, evaluation, registration, drift.",
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets("graph_windows").downstream(),
    description="Rebuild graph windows from the validated events, retrain, evaluate, register, re-check drift.",
    # A deployment with a GPU node pool routes this job there (see infra/).
    tags={"compute": "gpu-preferred", "dagster/priority": "5"},
)
