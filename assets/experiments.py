"""ablation_job: the paper's ablations as a Dagster job (the same study as ``make ablation``).

An op job, not an asset: an ablation study is an experiment about the model family, not a
product of the pipeline, so it stays out of the training graph's asset selections.
"""


import dagster as dg
from pydantic import Field

from anomaly_pipeline.experiments import (
    ABLATIONS,
    ablation_markdown,
    ablation_names,
    run_ablation,
    write_json,
)
from anomaly_pipeline.graph import WindowConfig
from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events
from anomaly_pipeline.validation import validate_events

from .common import md_table
from .resources import StateResource


class AblationConfig(dg.Config):
    """Which ablations (names as in docs/ABLATION.md; empty = all), seeds and training length."""

    ablations: list[str] = Field(default_factory=list, description="ablations to run (names as in docs/ABLATION.md); empty = all")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="model seeds per ablation")
    epochs_per_stage: int | None = Field(default=None, description="overrides every curriculum stage's epochs")
    synthetic_seed: int = Field(default=7, description="seed of the synthetic data the ablations use")
    n_users: int = Field(default=200, description="synthetic users")
    n_servers: int = Field(default=40, description="synthetic servers")
    days: int = Field(default=14, description="synthetic days")


@dg.op(description="Train the claimed-better and alternative variant of each ablation over seeds and compare.")
def run_ablation_study(context: dg.OpExecutionContext, config: AblationConfig, state: StateResource):
    unknown = set(config.ablations) - set(ablation_names())
    if unknown:
        raise dg.Failure(f"unknown ablations {sorted(unknown)}; choose from: {'; '.join(ablation_names())}")
    chosen = tuple(a for a in ABLATIONS if not config.ablations or a.name in config.ablations)
    events = generate_events(SyntheticConfig(seed=config.synthetic_seed, n_users=config.n_users,
                                             n_servers=config.n_servers, days=config.days))
    valid = validate_events(events).valid
    context.log.info(f"{len(valid):,} valid synthetic events; {len(chosen)} ablations x {len(config.seeds)} seeds")
    table = run_ablation("synthetic", valid, WindowConfig(), chosen, tuple(config.seeds),
                         epochs_per_stage=config.epochs_per_stage, log=context.log.info)
    out = state.run_dir("reports", context.run_id)
    markdown = ablation_markdown(table)
    (out / "ABLATION.md").write_text(markdown + "\n")
    write_json(out / "ablation.json", {**table.attrs, "rows": table.to_dict("records")})
    cols = ["ablation", "paper_claim", "average_precision_change_pct", "roc_auc_change_pct", "tpr_change_pct"]
    return dg.Output(
        str(out / "ABLATION.md"),
        metadata={"ablations": dg.MetadataValue.md(markdown), "summary": md_table(table[cols].round(1), 20),
                  "report": dg.MetadataValue.path(str(out / "ABLATION.md"))},
    )


@dg.job(description="The paper's ablations on synthetic data: attention, hops, heterogeneity, direction, scales, "
        "fusion, joint training, window sizes; a table with the paper's claim next to ours.",
        tags={"compute": "gpu-preferred"})
def ablation_job():
    run_ablation_study()
