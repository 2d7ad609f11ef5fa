"""Sec. 3.4's training protocol: the plateau rule, lr scaled with the batch, BN over 32 per device, precise BN,
the ImageNet profiles, and the `train` command choosing the dataset from the model.

The plateau rule and precise BN are the same code for both datasets; their real runs here are tiny CIFAR-10
runs (fast), the ImageNet wiring is checked on the spec the command builds and one run on generated JPEGs.
"""

import argparse
import dataclasses

import pytest
import torch
from torch import nn

from resnet_repro.commands.train import add_hardware_arguments, add_spec_arguments, spec_from_args
from resnet_repro.data.cifar10 import DataConfig
from resnet_repro.errors import UserError
from resnet_repro.experiment import IMAGENET_PROFILES, plan_runs
from resnet_repro.module import ClassifierModule
from resnet_repro.precise_bn import recompute_bn_statistics
from resnet_repro.runner import load_experiment
from resnet_repro.schedules import plateaued
from resnet_repro.spec import Schedule, TrainSpec, imagenet_lr, run_id
from resnet_repro.training import Hardware, RunOptions, train

CPU1 = Hardware(accelerator="cpu", threads=1)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_spec_arguments(parser)
    add_hardware_arguments(parser)
    parser.add_argument("--allow-partial", action="store_true")
    return parser.parse_args(list(argv))


# --- the plateau rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "errors, patience, drops",
    [
        ([50, 45, 44.95, 44.99], 2, True),  # the last 2 are not 0.1 below the best before them (45)
        ([50, 45, 44.8, 44.99], 2, False),  # 44.8 improves on 45 by 0.2
        ([50, 45, 44.95], 3, False),  # fewer evaluations than patience + 1: too early to tell
        ([50, 51, 52, 53], 3, True),  # getting worse is a plateau too
        ([60, 50, 40, 30], 1, False),
    ],
)
def test_plateau_rule(errors, patience, drops):
    assert plateaued(errors, patience) is drops


def tiny_spec(data, cache_root, **changes) -> TrainSpec:
    schedule = changes.pop("schedule", Schedule(max_iters=24, milestones=(), lr=0.1, plateau=1))
    settings = dict(log_every=2, eval_every=4, checkpoint_every=4) | changes
    return TrainSpec(
        model="resnet8",
        schedule=schedule,
        batch_size=16,
        data=DataConfig(data=str(data), root=str(cache_root), full=False),
        **settings,
    )


def run(spec, run_dir, resume=False):
    return train(spec, RunOptions(run_dir=run_dir, resume=resume, wandb="off", progress=False), CPU1)


def test_plateau_drops_follow_the_logged_test_errors_and_are_recorded(tiny_cifar_archive, cifar_cache_root, tmp_path):
    from resnet_repro.records import read_run

    record = run(tiny_spec(tiny_cifar_archive, cifar_cache_root), tmp_path / "run")
    curves = read_run(tmp_path / "run")[1].set_index("step")
    errors = curves["test/error"].dropna()
    # Replay the rule on the logged test errors (evaluations before the last iterate): the same drops.
    expected, since = [], []
    for step, error in errors.items():
        if step >= 24:
            break
        since.append(error)
        if plateaued(since, 1):
            expected.append(int(step))
            since = []
    assert record["lr_drops"] == expected and expected, "random-label data plateaus within 24 iterations"
    lr = curves["lr"].dropna()
    for step, value in lr.items():  # the logged lr is 0.1 / 10 ** (drops before that iteration)
        assert value == pytest.approx(0.1 * 0.1 ** sum(1 for d in expected if step > d))


def test_plateau_state_survives_a_resume(tiny_cifar_archive, cifar_cache_root, tmp_path, monkeypatch):
    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root)
    whole = run(spec, tmp_path / "whole")
    from resnet_repro import training

    original = training._StopOnSignal.on_train_batch_end

    def stop_at_12(self, trainer, *args):
        if trainer.global_step == 12:
            self.interrupted, self.reason = True, "ctrl-c"
        return original(self, trainer, *args)

    with monkeypatch.context() as patch:
        patch.setattr(training._StopOnSignal, "on_train_batch_end", stop_at_12)
        assert run(spec, tmp_path / "resumed")["status"] == "interrupted"  # stopped at 12, an evaluation step
    resumed = run(spec, tmp_path / "resumed", resume=True)
    assert resumed["lr_drops"] == whole["lr_drops"]
    assert resumed["final"]["test/error"] == pytest.approx(whole["final"]["test/error"])


def test_fixed_milestones_are_recorded_as_drops(tiny_cifar_archive, cifar_cache_root, tmp_path):
    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root, schedule=Schedule(max_iters=8, milestones=(4, 6)))
    record = run(spec, tmp_path / "run")
    assert record["lr_drops"] == [4, 6] and record["bn_images_per_device"] == 16


# --- precise BN -------------------------------------------------------------------------------------


def test_recompute_bn_statistics_is_the_plain_average_over_the_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    batches = [torch.randn(8, 3, 6, 6) * (i + 1) + i for i in range(3)]
    seen = recompute_bn_statistics(net, batches)
    outputs = [net[0](x).detach() for x in batches]
    means = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs])
    variances = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outputs])
    assert seen == 24
    torch.testing.assert_close(net[1].running_mean, means.mean(0))
    torch.testing.assert_close(net[1].running_var, variances.mean(0))
    assert net[1].momentum == 0.1 and not net.training  # momentum and mode restored


def test_precise_bn_changes_only_bn_statistics_and_is_recorded(tiny_cifar_archive, cifar_cache_root, tmp_path):
    schedule = Schedule(max_iters=8, milestones=(4, 6))
    plain = run(tiny_spec(tiny_cifar_archive, cifar_cache_root, schedule=schedule), tmp_path / "plain")
    precise = run(tiny_spec(tiny_cifar_archive, cifar_cache_root, schedule=schedule, precise_bn=64), tmp_path / "bn")
    assert plain["precise_bn_images"] is None and precise["precise_bn_images"] == 64  # 4 batches of 16
    assert run_id(tiny_spec(tiny_cifar_archive, cifar_cache_root, precise_bn=64)) != run_id(
        tiny_spec(tiny_cifar_archive, cifar_cache_root)
    )

    def weights(path):
        state = torch.load(path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        return {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}, state

    (w_plain, s_plain), (w_bn, s_bn) = weights(tmp_path / "plain"), weights(tmp_path / "bn")
    for key in w_plain:
        torch.testing.assert_close(w_plain[key], w_bn[key])  # the same training
    stats = [k for k in s_plain if k.endswith("running_mean")]
    assert any(not torch.allclose(s_plain[k], s_bn[k]) for k in stats)
    assert precise["final"]["test/error"] != plain["final"]["test/error"] or precise["final"][
        "test/loss"
    ] != pytest.approx(
        plain["final"]["test/loss"], abs=1e-9
    )  # the last iterate was evaluated again, with the recomputed statistics


# --- the command and the profiles -------------------------------------------------------------------


def test_train_command_picks_imagenet_and_the_paper_protocol_from_the_model():
    spec = spec_from_args(parse("--data", "/imagenet"), "resnet50")
    assert spec.dataset == "imagenet" and spec.data.data == "/imagenet"
    assert spec.batch_size == 256 and spec.schedule.lr == pytest.approx(0.1)
    assert spec.schedule.max_iters == 600_000 and spec.schedule.milestones == (150_000, 300_000)
    assert spec.schedule.warmup == "off" and spec.schedule.plateau is None
    assert spec == dataclasses.replace(spec_from_args(parse(), "resnet50"), data=spec.data)


def test_train_command_scales_lr_with_the_global_batch_and_iterations_with_the_paper_shape():
    spec = spec_from_args(parse("--batch-size", "64", "--iterations", "6000", "--subset", "10"), "resnet18")
    assert spec.schedule.lr == pytest.approx(0.025) == imagenet_lr(64)
    assert spec.schedule.milestones == (1500, 3000)  # 25% and 50%, as 15e4 and 30e4 of 60e4
    assert spec.data.subset == 10
    assert spec_from_args(parse("--batch-size", "64", "--lr", "0.05"), "resnet18").schedule.lr == 0.05


def test_train_command_plateau_rule_replaces_the_milestones():
    spec = spec_from_args(parse("--lr-plateau", "3"), "resnet34")
    assert spec.schedule.plateau == 3 and spec.schedule.milestones == ()
    spec.validate()


def test_cifar_nets_keep_their_paper_defaults_and_run_ids():
    spec = spec_from_args(parse(), "resnet20")
    # What the command built before it knew ImageNet: the spec's own defaults (so the same run ids).
    assert spec == TrainSpec(model="resnet20", data=DataConfig())
    assert spec.dataset == "cifar10" and spec.batch_size == 128 and spec.schedule == Schedule()


@pytest.mark.parametrize(
    "model, argv, message",
    [
        ("resnet18", ["--val-split", "5000"], "are CIFAR-10 flags; resnet18 trains on ImageNet"),
        ("resnet20", ["--subset", "10"], "are ImageNet flags; resnet20 trains on CIFAR-10"),
        ("resnet18", ["--iterations", "2"], "too short for the default lr drops at 25%, 50%"),
    ],
)
def test_train_command_refuses_flags_of_the_other_dataset(model, argv, message):
    with pytest.raises(UserError, match=message):
        spec_from_args(parse(*argv), model)


def test_plateau_rule_and_milestones_are_one_or_the_other():
    with pytest.raises(UserError, match="give it or --milestones, not both"):
        spec_from_args(parse("--lr-plateau", "3", "--milestones", "10,20"), "resnet34")
    with pytest.raises(UserError, match="give it or --milestones, not both"):
        TrainSpec(schedule=Schedule(plateau=2)).validate()


def test_plateau_patience_and_precise_bn_are_checked():
    with pytest.raises(UserError, match="--lr-plateau must be at least 1"):
        TrainSpec(schedule=Schedule(plateau=0)).validate()
    with pytest.raises(UserError, match="--precise-bn must be a number of training images"):
        TrainSpec(precise_bn=-1).validate()


def test_imagenet_profiles_are_the_paper_protocol_and_a_scaled_smoke():
    paper = IMAGENET_PROFILES["paper"]
    assert (paper.batch_size, paper.schedule.lr, paper.schedule.max_iters) == (256, 0.1, 600_000)
    specs = plan_runs(load_experiment("fig4"), load_experiment("fig4").profile("paper"))
    assert [s.model for s in specs] == ["plain18", "plain34", "resnet18", "resnet34"]
    assert all(s.dataset == "imagenet" and s.shortcut is None for s in specs)  # option A: the nets' default
    smoke = plan_runs(load_experiment("fig4"), load_experiment("fig4").profile("smoke"))[0]
    assert (smoke.data.crop, smoke.data.scale) == (64, (73, 137))  # 224 in [256, 480], scaled by 64/224
    with pytest.raises(UserError, match="unknown imagenet profile 'quick'"):
        load_experiment("fig4").profile("quick")


def test_table3_runs_resnet34_with_each_shortcut_and_shares_fig4s_runs():
    table3 = load_experiment("table3")
    specs = plan_runs(table3, table3.profile("paper"))
    assert [(s.model, s.shortcut) for s in specs] == [
        ("plain34", None),
        ("resnet34", None),  # A is ResNet-34's default: Fig. 4's very run
        ("resnet34", "B"),
        ("resnet34", "C"),
        ("resnet50", None),
        ("resnet101", None),
        ("resnet152", None),
    ]
    fig4 = {run_id(s) for s in plan_runs(load_experiment("fig4"), load_experiment("fig4").profile("paper"))}
    assert {run_id(specs[0]), run_id(specs[1])} <= fig4


def test_a_subset_run_has_one_output_per_class():
    from resnet_repro.data.imagenet import ImageNetConfig

    spec = TrainSpec(model="resnet18", dataset="imagenet", data=ImageNetConfig("/x", subset=7))
    assert ClassifierModule(spec).model.fc.out_features == 7
    assert ClassifierModule(dataclasses.replace(spec, data=ImageNetConfig("/x"))).model.fc.out_features == 1000
