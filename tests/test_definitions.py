"""The code location loads, and every asset tells its story in the UI."""

from __future__ import annotations

import dagster as dg

from definitions import defs

EXPECTED_ASSETS = {
    "raw_events", "validated_events", "quarantined_events", "graph_windows", "hybrid_model",
    "baseline_models", "model_evaluation", "registered_model", "drift_report",
}


def test_definitions_load_with_jobs_schedules_sensors():
    repo = defs.get_repository_def()
    assert {"full_pipeline_job", "retrain_job"} <= {j.name for j in repo.get_all_jobs()}
    assert defs.resolve_schedule_def("weekly_retrain_schedule").cron_schedule == "0 3 * * 1"
    assert defs.resolve_sensor_def("drift_retrain_sensor").job_name == "retrain_job"


def test_every_asset_has_description_group_kinds_and_owners():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys >= EXPECTED_ASSETS
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.description, f"{key} has no description"
        assert spec.group_name != "default", f"{key} has no group"
        assert spec.kinds, f"{key} has no kinds"
        assert spec.owners, f"{key} has no owners"


def test_blocking_quarantine_check_exists():
    checks = {c.name: c for c in defs.resolve_asset_graph().asset_check_keys}
    assert "quarantine_rate_below_threshold" in {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert dg.AssetCheckKey(dg.AssetKey("model_evaluation"), "hybrid_beats_baselines") in set(
        defs.resolve_asset_graph().asset_check_keys
    )
    del checks


def test_every_launchpad_field_says_what_it_does() -> None:
    """Every op-config and resource field carries a description, which the Launchpad shows."""
    import importlib
    import inspect

    missing = []
    for module in ("assets.evaluation", "assets.monitoring", "assets.training", "assets.experiments",
                   "assets.features", "assets.validation", "assets.scoring", "assets.resources"):
        for name, cls in inspect.getmembers(importlib.import_module(module), inspect.isclass):
            if cls.__module__ == module and issubclass(cls, dg.Config | dg.ConfigurableResource):
                missing += [f"{name}.{f}" for f, info in cls.model_fields.items() if not info.description]
    assert not missing, f"fields without a description: {missing}"


def test_plots_in_metadata_are_small_thumbnails_linking_the_full_file(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from assets.common import md_image

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    rng = np.random.default_rng(0)
    for ax in axes:
        for _ in range(6):
            ax.plot(np.cumsum(rng.normal(size=2000)))
    path = tmp_path / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    text = md_image(path, "Curves").value
    assert "data:image/png;base64," in text and path.resolve().as_uri() in text
    assert len(text) < 60_000 < path.stat().st_size * 4 / 3  # the full image inline would be larger
