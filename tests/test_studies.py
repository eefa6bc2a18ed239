"""Every committed study file reads, and every run it plans resolves to a valid config."""

from pathlib import Path

import pytest

from seg.engine.study import check_budgets, final_study, plan_run, read_study, sweep_study

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))


def test_the_repository_has_studies():
    assert len(STUDIES) >= 5


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_file_plans_valid_runs(path):
    study = read_study(path, root=ROOT)
    assert check_budgets(study)["iters"] > 0
    phases = [study]
    if study.sweep is not None:
        tuning = sweep_study(study)
        phases.append(tuning)
        first = {"point": study.sweep.points()[0]}
        phases.append(final_study(study, {v.name: first for v in study.variants}))
    for phase in phases:
        for variant in phase.variants:
            run = plan_run(phase, variant, phase.seeds[0])  # loads and validates the config
            assert run.settings["resolved"]["model"]["num_classes"] > 0
