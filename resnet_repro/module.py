"""The training step of Sec. 4.2 (CIFAR-10) and Sec. 3.4 (ImageNet) as a LightningModule: SGD, the
iteration schedule (fixed milestones, or the plateau rule), warm-up.

Host syncs happen only every `log_every` iterations: running sums stay on the device in between, and
nothing is logged to the progress bar (Lightning would read it back every step); the bar shows the last
logged interval from `last_train` and `last_eval`, plain Python numbers.
"""

import math
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn

from resnet_repro.models import build_model, model_info
from resnet_repro.responses import LayerResponses
from resnet_repro.schedules import WARMUP_UNTIL_TRAIN_ERROR, plateaued, warmup_applies, warmup_step_lr
from resnet_repro.spec import TrainSpec


class NonFiniteLossError(RuntimeError):
    """The training loss, the weights or an evaluation became NaN or infinite at `iteration`."""

    def __init__(self, message: str, iteration: int | None = None):
        super().__init__(message)
        self.iteration = iteration


def build_network(spec: TrainSpec) -> torch.nn.Module:
    """The spec's network: its shortcut option, and one output per class trained (`--subset N`: N)."""
    kwargs = {} if spec.shortcut is None else {"shortcut": spec.shortcut}
    subset = getattr(spec.data, "subset", None)  # ImageNet's first N classes
    if subset is not None:
        kwargs["num_classes"] = subset
    return build_model(spec.model, **kwargs)


class ClassifierModule(pl.LightningModule):
    """Cross-entropy classifier trained by SGD on the paper's iteration schedule."""

    def __init__(self, spec: TrainSpec | dict):
        super().__init__()
        self.spec = spec if isinstance(spec, TrainSpec) else TrainSpec.from_dict(spec)
        self.save_hyperparameters({"spec": self.spec.to_dict()})
        self.model = build_network(self.spec)
        if self.spec.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        sched, info = self.spec.schedule, model_info(self.spec.model)
        self.warmup = sched.warmup == "on" or (
            sched.warmup == "auto" and warmup_applies(info.depth, info.residual, info.family)
        )
        self.warmup_ended_at: int | None = None  # iteration at which training error first fell below 80%
        self.plateau_drops: list[int] = []  # iterations at which the plateau rule divided the lr by 10
        self._plateau_errors: list[float] = []  # test errors logged since the last plateau drop
        self.precise_bn_images: int | None = None  # images BN statistics were recomputed over (spec.precise_bn)
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self._reset_running()
        self._eval_sums: dict[str, torch.Tensor] = {}
        self._responses: LayerResponses | None = None
        self.layer_responses: list[dict] = []  # Fig. 7: std of each 3x3 layer's response at the last iterate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        """SGD as Sec. 4.2 sets it. Not torch's fused SGD kernel: on the CPU it ends 1 ulp away from the loop after
        a few steps (3e-8 on resnet8 after 6 steps), so it would change the runs' numbers."""
        # Sec. 4.2: weight decay 1e-4 and momentum 0.9, on all parameters.
        # DEVIATION (paper: Caffe SGD, v = m*v + lr*g): PyTorch applies lr after the momentum sum
        # (v = m*v + g; w -= lr*v); identical at constant lr, the step after each lr drop differs.
        return torch.optim.SGD(
            self.parameters(), lr=self.lr_at(0), momentum=self.spec.momentum, weight_decay=self.spec.weight_decay
        )

    def lr_at(self, iteration: int) -> float:
        s = self.spec.schedule
        milestones = s.milestones if s.plateau is None else self.plateau_drops
        return warmup_step_lr(iteration, s.lr, milestones, warmup=self.warmup, warmup_ended_at=self.warmup_ended_at)

    def lr_drops(self) -> list[int]:
        """Iterations at which the lr was divided by 10 so far (milestones passed, or plateau drops)."""
        s = self.spec.schedule
        return list(self.plateau_drops) if s.plateau is not None else [m for m in s.milestones if m <= self.global_step]

    def _apply_plateau_rule(self, error: float) -> None:
        """Sec. 3.4: divide the lr by 10 once the logged test error has stopped improving."""
        self._plateau_errors.append(error)
        if plateaued(self._plateau_errors, self.spec.schedule.plateau):
            self.plateau_drops.append(self.global_step)  # the next iteration trains at the lower lr
            self._plateau_errors = []
            self.log("lr_drop", float(self.global_step))

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        lr = self.lr_at(self.global_step)
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = lr

    # -- training -----------------------------------------------------------------------------
    def _reset_running(self) -> None:
        self._loss_sum = self._wrong_sum = self._seen = None
        self._interval_start = time.perf_counter()
        self._eval_seconds = 0.0
        self._untimed = 0  # images in the running sums restored from a checkpoint, not timed in this process

    def on_train_start(self) -> None:
        # Start the clock here, not at construction: throughput must not count decoding, set-up or loading.
        self._interval_start, self._eval_seconds = time.perf_counter(), 0.0

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():  # device-side sums: no host sync until the interval is logged
            wrong = (logits.argmax(1) != y).sum()
            if self._loss_sum is None:
                self._loss_sum, self._wrong_sum = loss.detach() * len(y), wrong
            else:
                self._loss_sum += loss.detach() * len(y)
                self._wrong_sum += wrong
            self._seen = (self._seen or 0) + len(y)
        iteration = self.global_step + 1
        if iteration % self.spec.log_every == 0 or iteration == self.spec.schedule.max_iters:
            self._log_interval()  # the last, possibly shorter, interval too: the final train error is the last iterate's
        return loss

    def _log_interval(self) -> None:
        """Running means over the interval (the paper's dashed curves), lr, throughput; one host sync."""
        reduce = self.trainer.strategy.reduce
        sums = torch.stack(
            [
                self._loss_sum.float(),
                self._wrong_sum.float(),
                torch.tensor(float(self._seen), device=self._loss_sum.device),
            ]
        )
        loss_sum, wrong_sum, seen = reduce(sums, reduce_op="sum").tolist()
        iteration = self.global_step + 1
        if not math.isfinite(loss_sum):
            raise NonFiniteLossError(f"training loss became {loss_sum / seen} by iteration {iteration}", iteration)
        seconds = time.perf_counter() - self._interval_start - self._eval_seconds
        metrics = {
            "train/loss": loss_sum / seen,
            "train/error": 100.0 * wrong_sum / seen,
            "lr": self.lr_at(self.global_step),
            "throughput": (seen - self._untimed) / seconds if seconds > 0 else float("nan"),
        }
        if iteration % self.spec.log_every == 0:
            self.log_dict(metrics, on_step=True, on_epoch=False, prog_bar=False, sync_dist=False)
        elif self.trainer.is_global_zero:
            # The run's last, shorter interval: Lightning writes step metrics only every log_every_n_steps,
            # so hand this row to the loggers directly (at Lightning's step numbering: iteration - 1).
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.global_step)
        self.last_train = metrics
        if self.warmup and self.warmup_ended_at is None and metrics["train/error"] < WARMUP_UNTIL_TRAIN_ERROR:
            # Sec. 4.2: "use 0.01 to warm up the training until the training error is below 80%".
            self.warmup_ended_at = iteration
            self.log("warmup_end", float(iteration), on_step=True, on_epoch=False)
        self._reset_running()

    # -- evaluation on the whole test (and val) set ----------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._eval_started = time.perf_counter()
        self._eval_sums = {}
        if self.global_step == self.spec.schedule.max_iters:  # the last iterate: Fig. 7's responses too
            self._responses = LayerResponses(self.model)
            # A compiled network reuses the graph it traced without these hooks: evaluate this pass eagerly.
            torch.compiler.set_stance("force_eager")

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y, split = batch
        if self._responses is not None:
            self._responses.active = split == "test"
        logits = self(x)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        row = torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum"),
                (logits.argmax(1) != y).sum().float(),
                (top5 != y[:, None]).all(1).sum().float(),
                torch.tensor(float(len(y)), device=y.device),
            ]
        )
        self._eval_sums[split] = self._eval_sums[split] + row if split in self._eval_sums else row

    def on_validation_epoch_end(self) -> None:
        reduce = self.trainer.strategy.reduce
        for split, sums in self._eval_sums.items():
            loss_sum, wrong_sum, wrong5_sum, seen = reduce(sums, reduce_op="sum").tolist()
            if not math.isfinite(loss_sum):  # finite training loss, non-finite evaluation: diverged all the same
                raise NonFiniteLossError(
                    f"{split} loss became {loss_sum / seen} at iteration {self.global_step}", self.global_step
                )
            self.last_eval[f"{split}/error"] = 100.0 * wrong_sum / seen
            self.last_eval[f"{split}/top5_error"] = 100.0 * wrong5_sum / seen
            self.last_eval[f"{split}/loss"] = loss_sum / seen
            self.log(f"{split}/error", self.last_eval[f"{split}/error"])
            self.log(f"{split}/top5_error", self.last_eval[f"{split}/top5_error"])
            self.log(f"{split}/loss", self.last_eval[f"{split}/loss"])
        fitting = self.trainer.state.fn == TrainerFn.FITTING and self.global_step < self.spec.schedule.max_iters
        if fitting and self.spec.schedule.plateau is not None and "test/error" in self.last_eval:
            self._apply_plateau_rule(self.last_eval["test/error"])
        if self._responses is not None:
            self.layer_responses = self._responses.result(lambda t: reduce(t, reduce_op="sum"))
            self._responses.remove()
            self._responses = None
            torch.compiler.set_stance("default")
        # Inside fit Lightning logs an evaluation at step global_step - 1, but a separate trainer.validate()
        # of the last iterate at global_step. Logging "step" (Lightning's documented override of the x
        # value) puts both on the iteration evaluated, minus one like the train rows (records adds the 1).
        self.log("step", float(self.global_step - 1))
        self.last_eval["step"] = self.global_step
        self._eval_seconds += time.perf_counter() - self._eval_started

    # -- checkpoint state beyond weights and optimizer ---------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A checkpoint follows an optimizer step whose loss has not been checked yet (checks happen once
        # per logging interval): refusing non-finite weights keeps the last good last.ckpt in place.
        if not all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point()):
            raise NonFiniteLossError(f"weights became non-finite by iteration {self.global_step}", self.global_step)
        checkpoint["warmup_ended_at"] = self.warmup_ended_at
        checkpoint["plateau"] = {"drops": self.plateau_drops, "errors": self._plateau_errors}
        checkpoint["precise_bn_images"] = self.precise_bn_images
        checkpoint["last_train"] = self.last_train
        checkpoint["last_eval"] = self.last_eval
        checkpoint["layer_responses"] = self.layer_responses
        # A Ctrl-C checkpoint can fall inside a logging interval: keep its running sums so the resumed run
        # logs the same running mean as an uninterrupted one.
        checkpoint["running_sums"] = self._global_running_sums()

    def _global_running_sums(self) -> list:
        """The interval's running sums over all ranks (every rank saves, rank 0's copy is written)."""
        if self._seen is None:
            return [None, None, None]
        sums = torch.stack([torch.as_tensor(s, dtype=torch.float64) for s in (self._loss_sum, self._wrong_sum)])
        sums = torch.cat(
            [sums.to(self.device), torch.tensor([float(self._seen)], dtype=torch.float64, device=self.device)]
        )
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        loss, wrong, seen = sums.tolist()
        return [loss, wrong, int(seen)]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.warmup_ended_at = checkpoint.get("warmup_ended_at")
        plateau = checkpoint.get("plateau", {})
        self.plateau_drops, self._plateau_errors = list(plateau.get("drops", [])), list(plateau.get("errors", []))
        self.precise_bn_images = checkpoint.get("precise_bn_images")
        self.last_train = checkpoint.get("last_train", {})
        self.last_eval = checkpoint.get("last_eval", {})
        self.layer_responses = checkpoint.get("layer_responses", [])
        # Python numbers: the first `+=` in training_step turns them into tensors on the right device.
        self._loss_sum, self._wrong_sum, self._seen = checkpoint.get("running_sums", (None, None, None))
        if self._seen is not None and self._trainer is not None and self.global_rank != 0:
            # The saved sums are over all ranks: rank 0 carries them on, so each image counts once when the
            # interval is reduced.
            self._loss_sum, self._wrong_sum, self._seen = 0.0, 0.0, 0
        self._untimed = self._seen or 0
