"""Profiles and run planning: which runs an artifact needs, and their identities."""

import pytest

from resnet_repro.errors import UserError
from resnet_repro.experiment import PROFILES, get_profile, plan_runs, plan_variants, select_runs, skipped_models
from resnet_repro.runner import list_experiments, load_experiment
from resnet_repro.spec import Schedule, run_id


def test_experiments_cover_the_cifar_artifacts():
    assert {"fig1", "fig6", "table6"} <= set(list_experiments())


def test_paper_profile_is_section_4_2():
    paper = PROFILES["paper"]
    assert paper.schedule == Schedule(max_iters=64_000, milestones=(32_000, 48_000), lr=0.1, warmup="auto")
    assert paper.batch_size == 128 and paper.depths is None and paper.max_seeds is None


def test_paper_profile_plans_every_depth_and_five_resnet110_seeds():
    specs = plan_runs(load_experiment("table6"), PROFILES["paper"])
    models = [s.model for s in specs]
    assert models.count("resnet110") == 5
    assert set(models) == {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"}
    assert {s.schedule.max_iters for s in specs} == {64_000}


def test_quick_profile_scales_the_schedule_and_keeps_its_shape():
    quick = PROFILES["quick"].schedule
    assert quick.milestones == (quick.max_iters // 2, quick.max_iters * 3 // 4)
    assert quick.lr == 0.1


def test_runs_shared_between_artifacts_have_one_identity():
    fig1 = {run_id(s) for s in plan_runs(load_experiment("fig1"), PROFILES["quick"])}
    fig6 = {run_id(s) for s in plan_runs(load_experiment("fig6"), PROFILES["quick"])}
    table6 = {run_id(s) for s in plan_runs(load_experiment("table6"), PROFILES["quick"])}
    assert fig1 < fig6 and table6 < fig6


def test_run_identity_ignores_where_the_data_lives():
    from resnet_repro.data.cifar10 import DataConfig

    experiment = load_experiment("fig1")
    here = [run_id(s) for s in plan_runs(experiment, PROFILES["quick"], DataConfig(data="/a/cifar.tar.gz"))]
    there = [run_id(s) for s in plan_runs(experiment, PROFILES["quick"], DataConfig(data="/b/other.zip", root="/c"))]
    assert here == there


def test_skipped_models_are_named():
    assert "resnet1202" in skipped_models(load_experiment("fig6"), PROFILES["quick"])
    assert skipped_models(load_experiment("fig6"), PROFILES["paper"]) == []


def test_unknown_profile_and_artifact_and_only_are_user_errors():
    with pytest.raises(UserError, match="paper, quick, mid, smoke"):
        get_profile("fast")
    with pytest.raises(UserError, match="fig1"):
        load_experiment("fig99")
    with pytest.raises(UserError, match="plain20-s0-"):
        select_runs(plan_runs(load_experiment("fig1"), PROFILES["quick"]), "resnet20")


def test_only_selects_by_model_or_run_id():
    specs = plan_runs(load_experiment("fig1"), PROFILES["quick"])
    assert [s.model for s in select_runs(specs, "plain56")] == ["plain56"]
    assert select_runs(specs, run_id(specs[0])) == [specs[0]]


def test_ablation_shortcuts_default_arm_is_the_fig6_run_and_b_c_are_new_runs():
    experiment = load_experiment("ablation_shortcuts")
    planned = plan_variants(experiment, experiment.profile("quick"))
    assert [(v.label, s.model, s.shortcut) for v, s in planned] == [
        ("A", "resnet20", None),
        ("B", "resnet20", "B"),
        ("C", "resnet20", "C"),
    ]
    fig6 = {run_id(s) for s in plan_runs(load_experiment("fig6"), PROFILES["quick"])}
    ids = [run_id(s) for _, s in planned]
    assert ids[0] in fig6 and not set(ids[1:]) & fig6 and len(set(ids)) == 3


def test_ablation_warmup_runs_resnet110_on_its_own_quick_budget_with_and_without_warmup():
    experiment = load_experiment("ablation_warmup")
    profile = experiment.profile("quick")
    assert profile.name == "quick" and profile.schedule.max_iters == 600 and profile.depths is None
    assert PROFILES["quick"].depths == (20, 56)  # the shared profile itself is unchanged
    planned = plan_variants(experiment, profile)
    assert [(s.model, s.schedule.warmup) for _, s in planned] == [("resnet110", "auto"), ("resnet110", "off")]


def test_cifar_run_ids_are_those_logged_before_specs_named_their_dataset():
    # The committed quick runs and the paper-profile run in progress were named before TrainSpec had a
    # `dataset` field: the field's CIFAR-10 default must not move them (the run cache finds runs by id).
    ids = [run_id(s) for s in plan_runs(load_experiment("fig6"), PROFILES["quick"])]
    assert ids == ["plain20-s0-318e5390", "plain56-s0-f5b36840", "resnet20-s0-086df2d5", "resnet56-s0-b8543a40"]
    assert run_id(plan_runs(load_experiment("table6"), PROFILES["paper"])[0]) == "resnet20-s0-670b68cd"
