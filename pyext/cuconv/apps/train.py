"""`python -m cuconv train | evaluate | predict`: train a CIFAR-10 model whose convolutions and
max-pools run on cuconv's kernels (or torch's, --backend native, for comparison), evaluate a
checkpoint, classify images. Under `torchrun --nproc_per_node=N` training runs with
DistributedDataParallel (gloo on CPU, nccl on GPU); only rank 0 writes logs, plots, checkpoints."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .data import DataError, Dataset, Normalizer, Split, load_cifar10, random_crop_flip, require
from .metrics import classification_report, format_report
from .models import BACKENDS, MODELS, RECIPES, build_model

CHECKPOINT_FORMAT = "cuconv-train-1"
CHECKPOINT_NAME = "last.pt"
# Options a resumed run may change; everything else (model, recipe, seed, data subset) is the
# checkpoint's, since changing it would make the resumed run a different run.
RESUME_OVERRIDES = ("epochs", "device", "threads", "out", "progress", "plots", "compile", "workers",
                    "data", "backend", "channels_last", "limit_test", "eval_batch_size")


# ------------------------------------------------------------------------------------ command line

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (those options say in their help what they default to)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a CIFAR-10 model on cuconv's kernels",
                              description="Train a CIFAR-10 model whose convolutions and max-pools run on "
                                          "cuconv's kernels. Defaults reproduce the seed CNN recipe; under "
                                          "torchrun it trains with DistributedDataParallel.",
                              formatter_class=_HelpFormatter)
    p.add_argument("--model", choices=MODELS, default="cifar-cnn",
                   help="cifar-cnn: the seed CNN; resnet: ResNet-18 for CIFAR")
    p.add_argument("--backend", choices=BACKENDS,
                   help="cuconv (default): Conv2d/MaxPool2d run cuconv's kernels; native: torch's own")
    p.add_argument("--epochs", type=int, help="default: the model's recipe (cifar-cnn 10, resnet 30)")
    p.add_argument("--batch-size", type=int, help="per process; default: recipe (32, resnet 128)")
    p.add_argument("--lr", type=float, help="default: recipe (Adam 1e-3, resnet SGD 0.1)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), help="default: recipe")
    p.add_argument("--momentum", type=float, help="SGD momentum (nesterov); default: recipe")
    p.add_argument("--weight-decay", type=float, help="default: recipe")
    p.add_argument("--schedule", choices=("none", "cosine"), help="learning-rate schedule, per step")
    p.add_argument("--normalize", choices=("scale", "standard"),
                   help="scale: inputs in [0,1]; standard: also per-channel mean/std")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop (4-pixel padding) + horizontal flip, on whole batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data", help="CIFAR-10 python batches or an image-folder tree (train/, test/); "
                                  "default: $CUCONV_DATA, else download into ~/.cache/cuconv")
    p.add_argument("--out", help="log, plots and checkpoints go here (default: runs/train, or the "
                                 "resumed checkpoint's directory)")
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help=f"continue from a checkpoint (a file, or a directory holding {CHECKPOINT_NAME})")
    p.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="mixed precision: torch.autocast to bfloat16 or float16 (fp16 with a gradient scaler)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="threads decoding an image-folder tree (once; then it is cached)")
    p.add_argument("--limit-train", type=int, metavar="N", help="train on a fixed random N-image subset")
    p.add_argument("--limit-test", type=int, metavar="N", help="evaluate on a fixed random N-image subset")
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="tqdm progress bar")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="PNG plots of the curves and confusion matrix in --out")
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser("evaluate", help="evaluate a checkpoint on the CIFAR-10 test set",
                              formatter_class=_HelpFormatter)
    e.add_argument("checkpoint")
    e.add_argument("--data", help="default: the data the checkpoint was trained on, else $CUCONV_DATA")
    e.add_argument("--backend", choices=BACKENDS, default="cuconv")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    e.add_argument("--threads", type=int)
    e.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    e.add_argument("--limit-test", type=int, metavar="N")
    e.add_argument("--eval-batch-size", type=int, default=500)
    e.add_argument("--out", help="write evaluation.json (and confusion.png) here")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.set_defaults(func=cmd_evaluate)

    r = subparsers.add_parser("predict", help="classify images with a checkpoint (top-k with probabilities)",
                              formatter_class=_HelpFormatter)
    r.add_argument("checkpoint")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--top-k", type=int, default=3)
    r.add_argument("--backend", choices=BACKENDS, default="cuconv")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    r.add_argument("--json", action="store_true", help="print the predictions as JSON")
    r.set_defaults(func=cmd_predict)


# ------------------------------------------------------------------------------ process and device

@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DataError("--device cuda: no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device_choice: str):
    """Under torchrun (WORLD_SIZE > 1): join the process group; nccl on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = DistContext(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_choice, ctx.local_rank)
    if ctx.enabled:
        import torch.distributed as dist
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def _barrier(ctx: DistContext):
    if ctx.enabled:
        torch.distributed.barrier()


# ------------------------------------------------------------------------------------- checkpoints

def rng_state(data_gen: torch.Generator, aug_gen: torch.Generator, device: torch.device) -> Dict:
    """Every random stream a run draws from, as tensors and plain values (so torch.load's
    weights_only mode can read it back)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "python": random.getstate(),
        "data": data_gen.get_state(),
        "augment": aug_gen.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def set_rng_state(state: Dict, data_gen: torch.Generator, aug_gen: torch.Generator, device: torch.device):
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    data_gen.set_state(state["data"])
    aug_gen.set_state(state["augment"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def resolve_checkpoint(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise DataError(f"no checkpoint at {p}")
    return p


def load_checkpoint(path: str) -> Dict:
    ckpt = torch.load(resolve_checkpoint(path), map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a cuconv training checkpoint")
    return ckpt


def save_checkpoint(ckpt: Dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


# -------------------------------------------------------------------------------------- evaluation

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(amp: Optional[str], device: torch.device):
    """torch.autocast to the run's 16-bit dtype (convolutions in it, on either backend), or nothing."""
    if amp in (None, "none"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


@torch.no_grad()
def evaluate_split(model, split: Split, normalize: Normalizer, device, num_classes: int,
                   batch_size: int = 500, channels_last: bool = False, ctx: DistContext = DistContext(),
                   amp: Optional[str] = None):
    """Loss and confusion matrix over `split`; under DDP each rank takes every world_size-th
    image and the sums are all-reduced, so every rank gets the whole-split result."""
    was_training = model.training
    model.eval()
    idx = torch.arange(ctx.rank, len(split), ctx.world_size)
    cm = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(idx), batch_size):
        b = idx[start:start + batch_size]
        x = normalize(split.images[b].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = split.labels[b].to(device)
        with autocast(amp, device):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        cm += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    if ctx.enabled:
        torch.distributed.all_reduce(cm)
        torch.distributed.all_reduce(loss_sum)
    model.train(was_training)
    n = max(len(split), 1)
    return float(loss_sum) / n, cm.view(num_classes, num_classes).cpu()


# ---------------------------------------------------------------------------------- training: setup

def _resolve_config(args) -> Dict:
    """The run's configuration: the model's recipe, overridden by the options given."""
    config = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    for key, value in RECIPES[args.model].items():
        if config.get(key) is None:
            config[key] = value
    config["backend"] = config["backend"] or "cuconv"
    config["channels_last"] = bool(config["channels_last"])
    return config


def _config_and_checkpoint(args) -> Tuple[Dict, Optional[Dict]]:
    """The run's configuration and the checkpoint it resumes (None for a new run). A resumed run
    takes the checkpoint's configuration, with only RESUME_OVERRIDES changed by the options."""
    if not args.resume:
        config = _resolve_config(args)
        config["out"] = config["out"] or "runs/train"
        return config, None
    ckpt = load_checkpoint(args.resume)
    config = dict(ckpt["config"])
    given = vars(args)
    for key in RESUME_OVERRIDES:
        if given.get(key) is not None:
            config[key] = given[key]
    config["resume"] = args.resume
    if args.out is None:
        config["out"] = str(resolve_checkpoint(args.resume).parent)
    return config, ckpt


def _load_data(config: Dict, ctx: DistContext, progress: bool, log) -> Dataset:
    # Rank 0 decodes (and caches) an image-folder tree first; the others then read the cache.
    if ctx.is_main:
        data = load_cifar10(config["data"], workers=config["workers"], progress=progress, log=log)
    _barrier(ctx)
    if not ctx.is_main:
        data = load_cifar10(config["data"], workers=config["workers"], log=log)
    return data


def _seeded_model(config: Dict, num_classes: int, ckpt: Optional[Dict], device: torch.device) -> torch.nn.Module:
    random.seed(config["seed"])
    np.random.seed(config["seed"])
    torch.manual_seed(config["seed"])  # the same initial weights for both backends
    model = build_model(config["model"], config["backend"], num_classes)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    if config["channels_last"]:
        model.to(memory_format=torch.channels_last)
    return model


def _optimizer_and_scheduler(config: Dict, model: torch.nn.Module, total_steps: int):
    if config["optimizer"] == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                                    nesterov=config["momentum"] > 0, weight_decay=config["weight_decay"])
    if config["schedule"] == "cosine":
        lr_lambda = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))  # noqa: E731
    else:
        lr_lambda = lambda step: 1.0  # noqa: E731
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def _wrap_for_training(model: torch.nn.Module, config: Dict, ctx: DistContext, device: torch.device,
                       train_size: int):
    """The module the training steps call (DistributedDataParallel under torchrun, then
    torch.compile with --compile) and the sampler that shards each epoch's order (None in one
    process)."""
    sampler = None
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data import DistributedSampler
        sampler = DistributedSampler(range(train_size), num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=True, seed=config["seed"])
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config["compile"]:
        model = torch.compile(model)
    return model, sampler


@dataclass
class TrainingRun:
    """What a training run holds from its setup to its last epoch."""
    config: Dict
    ctx: DistContext
    device: torch.device
    out: Path
    log: Callable
    data: Dataset
    train_split: Split
    test_split: Split
    raw_model: torch.nn.Module  # evaluated and checkpointed
    model: torch.nn.Module  # what the training steps call: raw_model, wrapped by _wrap_for_training
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    normalize: Normalizer
    data_gen: torch.Generator  # the epochs' shuffles
    aug_gen: torch.Generator  # the augmentation's crops and flips
    sampler: object  # DistributedSampler under torchrun, else None
    tqdm: object  # the tqdm module when a progress bar is shown, else None
    scaler: object = None  # the float16 gradient scaler (--amp fp16), else None
    history: List[Dict] = field(default_factory=list)
    start_epoch: int = 0

    @property
    def classes(self) -> List[str]:
        return self.data.classes

    @property
    def say(self):
        # Under a progress bar, tqdm.write keeps the printed line clear of the bar.
        return self.tqdm.tqdm.write if self.tqdm else self.log


def restore_training_state(run: TrainingRun, ckpt: Dict) -> None:
    """Continue from `ckpt`: the optimizer, schedule, history and epoch, and this rank's random
    streams when the checkpoint was written by as many processes as this run has."""
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler is not None and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.history = list(ckpt["history"])
    run.start_epoch = int(ckpt["epoch"])
    states = ckpt["rng"]
    if len(states) == run.ctx.world_size:
        set_rng_state(states[run.ctx.rank], run.data_gen, run.aug_gen, run.device)
    else:
        run.log(f"warning: the checkpoint was written by {len(states)} process(es), this run has "
                f"{run.ctx.world_size}: random streams restart from the seed")


def setup_run(args, ctx: DistContext, device: torch.device) -> TrainingRun:
    """Configuration, output directory, data, model, optimizer and schedule, random streams, the
    resumed state and the DDP/compile wrapping, in the order that fixes what each random stream
    draws."""
    log = print if ctx.is_main else (lambda *a, **k: None)
    if args.threads:
        torch.set_num_threads(args.threads)
    config, ckpt = _config_and_checkpoint(args)
    out = Path(config["out"])
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)

    progress = bool(config["progress"]) and ctx.is_main
    data = _load_data(config, ctx, progress, log)
    train_split = data.train.subset(config["limit_train"])
    test_split = data.test.subset(config["limit_test"])

    model = _seeded_model(config, len(data.classes), ckpt, device)
    steps_per_epoch = math.ceil(len(train_split) / ctx.world_size / config["batch_size"])
    optimizer, scheduler = _optimizer_and_scheduler(config, model, max(1, config["epochs"] * steps_per_epoch))
    run = TrainingRun(config=config, ctx=ctx, device=device, out=out, log=log, data=data,
                      train_split=train_split, test_split=test_split, raw_model=model, model=model,
                      optimizer=optimizer, scheduler=scheduler, normalize=Normalizer(config["normalize"]),
                      data_gen=torch.Generator().manual_seed(config["seed"]),
                      aug_gen=torch.Generator().manual_seed(config["seed"] * 1000 + 1 + ctx.rank),
                      sampler=None, tqdm=None)
    if config.get("amp") == "fp16":  # float16 gradients underflow without loss scaling
        run.scaler = torch.amp.GradScaler(device.type)
    if ckpt is not None:
        restore_training_state(run, ckpt)
    run.model, run.sampler = _wrap_for_training(model, config, ctx, device, len(train_split))
    run.tqdm = require("tqdm", "for the progress bar (or pass --no-progress)") if progress else None
    return run


def _announce(run: TrainingRun) -> None:
    config, ctx = run.config, run.ctx
    if not ctx.is_main:
        return
    run.log(f"{config['model']} on {config['backend']} kernels, {run.device}, {ctx.world_size} process(es), "
            f"{torch.get_num_threads()} thread(s); {run.data.source}; train {len(run.train_split)}, "
            f"test {len(run.test_split)} images; {config['optimizer']} lr {config['lr']}, batch "
            f"{config['batch_size']}, epochs {config['epochs']}, augment {config['augment']}"
            + (f", autocast {config['amp']}" if config.get("amp", "none") != "none" else ""))
    if run.start_epoch:
        run.log(f"resuming from {config['resume']} after epoch {run.start_epoch}")


# ------------------------------------------------------------------------------ training: one epoch

def _epoch_indices(n: int, epoch: int, data_gen: torch.Generator, sampler) -> torch.Tensor:
    if sampler is not None:
        sampler.set_epoch(epoch)  # DistributedSampler shuffles with seed + epoch
        return torch.tensor(list(iter(sampler)), dtype=torch.int64)
    return torch.randperm(n, generator=data_gen)


def _training_batch(run: TrainingRun, b: torch.Tensor):
    """Images (augmented, normalized, in the run's memory format) and labels of the indices `b`."""
    x = run.train_split.images[b].to(run.device, non_blocking=True)
    if run.config["augment"]:
        x = random_crop_flip(x, run.aug_gen)
    x = run.normalize(x)
    if run.config["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, run.train_split.labels[b].to(run.device, non_blocking=True)


@dataclass
class EpochTraining:
    loss: float
    accuracy: float
    images: float  # over all processes
    seconds: float


def train_epoch(run: TrainingRun, epoch: int) -> EpochTraining:
    """One pass over the shuffled training split (this rank's shard of it under DDP); the loss
    and accuracy are over every process's images."""
    config, ctx, device = run.config, run.ctx, run.device
    run.model.train()
    order = _epoch_indices(len(run.train_split), epoch, run.data_gen, run.sampler)
    batches = order.split(config["batch_size"])
    bar = run.tqdm.tqdm(total=len(order) * ctx.world_size, desc=f"epoch {epoch}/{config['epochs']}",
                        unit="img", leave=False, dynamic_ncols=True) if run.tqdm else None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    for step, b in enumerate(batches):
        x, y = _training_batch(run, b)
        with autocast(config.get("amp"), device):
            logits = run.model(x)
            loss = F.cross_entropy(logits, y)
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is None:
            loss.backward()
            run.optimizer.step()
        else:
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
        run.scheduler.step()
        loss_sum += loss.detach().double() * len(b)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(b)
        if bar is not None:
            bar.update(len(b) * ctx.world_size)
            if step % 10 == 0 or step == len(batches) - 1:  # .item() syncs a GPU: not every step
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{100 * int(correct) / seen:.2f}%",
                                img_s=f"{seen * ctx.world_size / max(elapsed, 1e-9):.0f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
    if ctx.enabled:
        torch.distributed.all_reduce(totals)
    return EpochTraining(float(totals[0] / totals[2]), float(totals[1] / totals[2]), float(totals[2]), seconds)


def evaluate(run: TrainingRun) -> Tuple[float, Dict, float]:
    """The test split's loss and classification report for the model as it is now, and the
    seconds that took."""
    start = time.perf_counter()
    loss, cm = evaluate_split(run.raw_model, run.test_split, run.normalize, run.device, len(run.classes),
                              run.config["eval_batch_size"], run.config["channels_last"], run.ctx,
                              run.config.get("amp"))
    seconds = time.perf_counter() - start
    return loss, classification_report(cm, run.classes), seconds


def epoch_record(epoch: int, trained: EpochTraining, test_loss: float, report: Dict, eval_seconds: float,
                 lr: float) -> Dict:
    """One line of metrics.jsonl."""
    return {"epoch": epoch, "train_loss": trained.loss, "train_accuracy": trained.accuracy,
            "test_loss": test_loss, "test_accuracy": report["accuracy"],
            "macro_precision": report["macro_precision"], "macro_recall": report["macro_recall"],
            "macro_f1": report["macro_f1"], "lr": lr,
            "train_seconds": trained.seconds, "eval_seconds": eval_seconds,
            "images_per_second": trained.images / trained.seconds,
            "per_class": report["per_class"], "confusion_matrix": report["confusion_matrix"]}


def _epoch_line(record: Dict, epochs: int) -> str:
    return (f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} "
            f"acc {100 * record['train_accuracy']:.2f}%  test loss {record['test_loss']:.4f} "
            f"acc {100 * record['test_accuracy']:.2f}% macro-F1 {record['macro_f1']:.4f}  "
            f"{record['train_seconds']:.1f} s ({record['images_per_second']:.0f} img/s), "
            f"eval {record['eval_seconds']:.1f} s")


# ------------------------------------------------------------------- training: checkpoint and logs

def training_checkpoint(run: TrainingRun, epoch: int, rng_states: List[Dict]) -> Dict:
    """What `restore_training_state` and `evaluate`/`predict` read back (see load_checkpoint)."""
    config = run.config
    return {"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": run.raw_model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()},
            "classes": list(run.classes), "normalize": run.normalize.state(),
            "history": run.history, "rng": rng_states, "world_size": run.ctx.world_size}


def save_epoch(run: TrainingRun, epoch: int) -> None:
    """The checkpoint, config.json, metrics.jsonl and plots after `epoch`, written by rank 0."""
    ctx = run.ctx
    # Every rank's random streams go into the checkpoint, so a resumed DDP run continues each.
    local_rng = rng_state(run.data_gen, run.aug_gen, run.device)
    if ctx.enabled:
        states = [None] * ctx.world_size
        torch.distributed.all_gather_object(states, local_rng)
    else:
        states = [local_rng]
    if ctx.is_main:
        save_checkpoint(training_checkpoint(run, epoch, states), run.out / CHECKPOINT_NAME)
        _write_logs(run.out, run.config, run.history, run.classes, run.config["plots"], run.log)
    _barrier(ctx)


def _write_logs(out: Path, config: Dict, history: List[Dict], classes, plots: bool, log):
    with open(out / "config.json", "w") as f:
        json.dump(config, f, indent=2, default=str)
    tmp = out / "metrics.jsonl.tmp"
    with open(tmp, "w") as f:
        for record in history:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, out / "metrics.jsonl")
    if plots and history:
        from .plots import plot_confusion, plot_curves
        plot_curves(history, out / "curves.png")
        last = history[-1]
        plot_confusion(last["confusion_matrix"], classes, out / "confusion.png",
                       f"Test confusion matrix, epoch {last['epoch']} (accuracy {100 * last['test_accuracy']:.2f}%)")


# ----------------------------------------------------------------------------- training: the loop

def train(args) -> Dict:
    """Run the training described by `args` (the `train` sub-command's namespace); returns the
    last epoch's record (or {} when there was nothing left to train)."""
    ctx, device = init_distributed(args.device)
    try:
        return _train(args, ctx, device)
    finally:
        if ctx.enabled:
            torch.distributed.destroy_process_group()


def _train(args, ctx: DistContext, device: torch.device) -> Dict:
    run = setup_run(args, ctx, device)
    _announce(run)
    epochs = run.config["epochs"]
    record: Dict = {}
    if run.start_epoch >= epochs:
        run.log(f"the checkpoint is at epoch {run.start_epoch}: nothing to train for --epochs {epochs}")
    for epoch in range(run.start_epoch + 1, epochs + 1):
        trained = train_epoch(run, epoch)
        test_loss, report, eval_seconds = evaluate(run)
        record = epoch_record(epoch, trained, test_loss, report, eval_seconds, run.optimizer.param_groups[0]["lr"])
        run.history.append(record)
        run.say(_epoch_line(record, epochs))
        save_epoch(run, epoch)
    if ctx.is_main and record:
        _final_report(run, record)
    return record


def _final_report(run: TrainingRun, record: Dict) -> None:
    run.log(format_report(classification_report(torch.tensor(record["confusion_matrix"]), run.classes)))
    out = run.out
    run.log(f"wrote {out / 'metrics.jsonl'}, {out / CHECKPOINT_NAME}"
            + (f", {out / 'curves.png'}, {out / 'confusion.png'}" if run.config["plots"] else ""))


def cmd_train(args) -> int:
    try:
        train(args)
    except DataError as e:
        print(f"cuconv train: error: {e}", file=sys.stderr)
        return 2
    return 0


# --------------------------------------------------------------------------- evaluate and predict

def _model_from_checkpoint(ckpt: Dict, backend: str, device: torch.device):
    model = build_model(ckpt["config"]["model"], backend, len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def evaluate_checkpoint(args) -> Dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    model = _model_from_checkpoint(ckpt, args.backend, device)
    data = load_cifar10(args.data if args.data is not None else ckpt["config"].get("data"),
                        workers=args.workers, log=lambda *a, **k: print(*a, file=sys.stderr, **k))
    if list(data.classes) != list(ckpt["classes"]):
        raise DataError(f"the data's classes {data.classes} are not the checkpoint's {ckpt['classes']}")
    test = data.test.subset(args.limit_test)
    normalize = Normalizer(**ckpt["normalize"])
    loss, cm = evaluate_split(model, test, normalize, device, len(ckpt["classes"]), args.eval_batch_size)
    report = classification_report(cm, ckpt["classes"])
    report.update(loss=loss, images=len(test), checkpoint=str(args.checkpoint), epoch=int(ckpt["epoch"]))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "evaluation.json", "w") as f:
            json.dump(report, f, indent=2)
        try:
            from .plots import plot_confusion
            plot_confusion(report["confusion_matrix"], ckpt["classes"], out / "confusion.png",
                           f"Test confusion matrix (accuracy {100 * report['accuracy']:.2f}%)")
        except DataError as e:  # matplotlib missing: the JSON is still written
            print(f"cuconv evaluate: no plot: {e}", file=sys.stderr)
    return report


def cmd_evaluate(args) -> int:
    try:
        report = evaluate_checkpoint(args)
    except DataError as e:
        print(f"cuconv evaluate: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['checkpoint']} (epoch {report['epoch']}) on {report['images']} test images, "
              f"loss {report['loss']:.4f}")
        print(format_report(report))
    return 0


def load_image(path: str) -> torch.Tensor:
    """An image file as uint8 (3, 32, 32) (RGB; resized when it is another size)."""
    from .data import decode_images
    return decode_images([Path(path)])[0]


def predict(ckpt: Dict, images: List[str], top_k: int = 3, backend: str = "cuconv",
            device: torch.device = torch.device("cpu")) -> List[Dict]:
    model = _model_from_checkpoint(ckpt, backend, device)
    normalize = Normalizer(**ckpt["normalize"])
    batch = torch.stack([load_image(p) for p in images]).to(device)
    with torch.no_grad():
        probs = torch.softmax(model(normalize(batch)), dim=1).cpu()
    k = min(top_k, probs.shape[1])
    top = probs.topk(k, dim=1)
    return [{"image": str(p), "top": [{"class": ckpt["classes"][int(i)], "probability": float(v)}
                                      for v, i in zip(values, indices)]}
            for p, values, indices in zip(images, top.values, top.indices)]


def cmd_predict(args) -> int:
    try:
        ckpt = load_checkpoint(args.checkpoint)
        results = predict(ckpt, args.images, args.top_k, args.backend, pick_device(args.device))
    except (DataError, OSError, RuntimeError) as e:
        print(f"cuconv predict: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['image']}: " + ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"]))
    return 0
