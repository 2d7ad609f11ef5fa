"""The training step never waits for the device between logging steps.

On a GPU every `.item()`, `.tolist()`, `bool(t)`, `float(t)` or `.cpu()` of a device tensor blocks the host
until the device has caught up, so the host can no longer queue the next step's kernels ahead. On the CPU
nothing blocks, but the calls are the same: counting them here catches one that creeps back.
"""

import pytest
import torch

from resnet_repro.module import ClassifierModule
from resnet_repro.training import Hardware, RunOptions, train
from tests.test_training import tiny_spec

SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")
LOG_EVERY = 4


@pytest.fixture
def syncs(monkeypatch):
    """{iteration: [method names]}: the syncing calls made from the start of an iteration to the next one's."""
    calls: dict[int, list[str]] = {}
    current = [None]

    def counted(name, original):
        def wrapper(self, *args, **kwargs):
            if current[0] is not None:
                calls.setdefault(current[0], []).append(name)
            return original(self, *args, **kwargs)

        return wrapper

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    start = ClassifierModule.on_train_batch_start

    def at_start(self, batch, batch_idx):
        current[0] = self.global_step + 1
        return start(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "on_train_batch_start", at_start)
    return calls


@pytest.mark.parametrize("progress", [False, True], ids=["no-bar", "bar"])
def test_no_host_sync_between_logging_steps(syncs, tiny_cifar_archive, cifar_cache_root, tmp_path, progress):
    spec = tiny_spec(
        tiny_cifar_archive,
        cifar_cache_root,
        iters=16,
        milestones=(8, 12),
        log_every=LOG_EVERY,
        eval_every=8,
        checkpoint_every=8,
    )
    threads = torch.get_num_threads()
    try:
        record = train(
            spec,
            RunOptions(run_dir=tmp_path / "run", wandb="off", progress=progress),
            Hardware(accelerator="cpu", threads=1),
        )
    finally:
        torch.set_num_threads(threads)
    assert record["status"] == "finished"
    assert any(i % LOG_EVERY == 0 for i in syncs), "no sync counted at all: the counter is not wired in"
    between = {i: names for i, names in syncs.items() if i % LOG_EVERY}
    assert between == {}, f"host syncs at iterations that do not log: {between}"
