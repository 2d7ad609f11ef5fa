"""Tests for resnet_repro.schedules and spec.Schedule: the Sec. 4.2 iteration schedule and warm-up."""

import pytest

from resnet_repro.errors import UserError
from resnet_repro.schedules import step_lr, warmup_applies, warmup_step_lr
from resnet_repro.spec import Schedule, TrainSpec

PAPER = Schedule()  # Sec. 4.2: lr 0.1, /10 at 32k and 48k, stop at 64k


@pytest.mark.parametrize(
    "iteration, lr",
    [
        (0, 0.1),
        (31_999, 0.1),
        (32_000, 0.01),
        (47_999, 0.01),
        (48_000, 0.001),
        (63_999, 0.001),
    ],
)
def test_step_lr_paper_golden_values(iteration, lr):
    assert step_lr(iteration, PAPER.lr, PAPER.milestones) == pytest.approx(lr, rel=1e-12)


def test_schedule_defaults_are_the_papers():
    assert (PAPER.max_iters, PAPER.milestones, PAPER.lr, PAPER.warmup) == (64_000, (32_000, 48_000), 0.1, "auto")


@pytest.mark.parametrize(
    "iteration, lr",
    [
        (0, 0.1),
        (31_999, 0.1),
        (32_000, 0.01),
        (47_999, 0.01),
        (48_000, 0.001),
        (63_999, 0.001),
    ],
)
def test_warmup_step_lr_after_switch_is_the_plain_schedule(iteration, lr):
    # Sec. 4.2: after warm-up "go back to 0.1"; the milestones stay where they were.
    got = warmup_step_lr(iteration, 0.1, PAPER.milestones, warmup=True, warmup_ended_at=400)
    assert got == pytest.approx(lr, rel=1e-12)


@pytest.mark.parametrize("iteration", [0, 1, 399, 5_000])
def test_warmup_step_lr_is_001_until_the_switch(iteration):
    got = warmup_step_lr(iteration, 0.1, PAPER.milestones, warmup=True, warmup_ended_at=None)
    assert got == pytest.approx(0.01, rel=1e-12)


def test_warmup_step_lr_off_ignores_the_warmup_state():
    for iteration in (0, 100, 40_000):
        assert warmup_step_lr(iteration, 0.1, PAPER.milestones, warmup=False, warmup_ended_at=None) == step_lr(
            iteration, 0.1, PAPER.milestones
        )


def test_warmup_step_lr_returns_to_base_lr_at_the_switch_iteration():
    before = warmup_step_lr(399, 0.1, PAPER.milestones, warmup=True, warmup_ended_at=None)
    after = warmup_step_lr(400, 0.1, PAPER.milestones, warmup=True, warmup_ended_at=400)
    assert (before, after) == (pytest.approx(0.01), pytest.approx(0.1))


@pytest.mark.parametrize("depth, applies", [(20, False), (56, False), (110, True), (1202, True)])
def test_warmup_applies_to_110_and_1202_layers(depth, applies):
    assert warmup_applies(depth) is applies


def test_schedule_scaled_keeps_the_papers_shape():
    # The paper's milestones sit at 50% and 75% of 64k; `scaled` keeps that over any budget.
    assert PAPER.scaled(64_000) == PAPER
    short = Schedule(lr=0.05, warmup="on").scaled(2_000)
    assert (short.max_iters, short.milestones, short.lr, short.warmup) == (2_000, (1_000, 1_500), 0.05, "on")


@pytest.mark.parametrize(
    "schedule, flag",
    [
        (Schedule(max_iters=100, milestones=(50, 100)), "--milestones"),
        (Schedule(max_iters=100, milestones=(80, 50)), "--milestones"),
        (Schedule(max_iters=100, milestones=(0, 50)), "--milestones"),
        (Schedule(lr=-0.1), "--lr"),
        (Schedule(lr=0.0), "--lr"),
        (Schedule(max_iters=0, milestones=()), "--iterations"),
        (Schedule(warmup="maybe"), "--warmup"),
    ],
)
def test_train_spec_validate_rejects_impossible_schedules(schedule, flag):
    with pytest.raises(UserError, match=flag):
        TrainSpec(schedule=schedule).validate()


def test_warmup_gives_way_at_the_first_milestone_if_it_never_ended():
    # A net that never gets below 80% train error must not train at 0.01 for the whole schedule.
    kwargs = dict(warmup=True, warmup_ended_at=None)
    assert warmup_step_lr(31_999, 0.1, (32_000, 48_000), **kwargs) == pytest.approx(0.01)
    assert warmup_step_lr(32_000, 0.1, (32_000, 48_000), **kwargs) == pytest.approx(0.01)  # the schedule's own 0.01
    assert warmup_step_lr(48_000, 0.1, (32_000, 48_000), **kwargs) == pytest.approx(0.001)


def test_warmup_is_for_residual_nets_only():
    assert warmup_applies(110, residual=True) and warmup_applies(1202, residual=True)
    assert not warmup_applies(110, residual=False)


def test_spec_refuses_imagenet_nets_and_repeated_milestones():
    with pytest.raises(UserError, match="ImageNet net"):
        TrainSpec(model="resnet50").validate()
    with pytest.raises(UserError, match="must increase"):
        TrainSpec(schedule=Schedule(max_iters=10, milestones=(5, 5))).validate()
