"""Configuration of one training run (``TrainConfig``), shared by the CLI, evolution trials and tests.

Each setting is declared once, here: its default, and in its field's metadata (``setting``) its
command-line flag, help, choices and smallest value. ``detector/cli.py`` generates ``python -m detector``
from these fields, and ``check_setting`` is the one range check: ``TrainConfig`` runs it naming the
field (``batch must be >= 1, got 0``), the CLI runs it naming the flag (``--batch must be >= 1, got 0``).
"""
from __future__ import annotations

from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any, Callable, Iterator, Optional

from detector.hyp import HYP_OPTIMIZERS

MODEL_SIZES = ("n", "s", "m")
OPTIMIZER_CHOICES = ("auto", *HYP_OPTIMIZERS)  # auto: chosen from the planned steps (optim.choose_optimizer)
TRAIN = ("train",)
TRAIN_AND_VAL = ("train", "val")
STRIDE = 32  # the model's largest stride: the input size must be a multiple of it


@dataclass(frozen=True)
class Flag:
    """The command-line side of one ``TrainConfig`` field."""

    flag: str  # "--batch"; a bool field whose default is True is switched off by its flag ("--no-save")
    help: str  # "(default: ...)" is appended from the field's default unless the help says it
    parse: Callable[[str], Any] = str  # int, float, str; bool: a switch without a value
    commands: tuple[str, ...] = TRAIN  # the subcommands that take the flag
    choices: Optional[tuple[str, ...]] = None
    low: Optional[int] = None  # smallest allowed value
    multiple: Optional[int] = None  # the value must be a multiple of this
    metavar: Optional[str] = None


def setting(default: Any = MISSING, flag: str = "", help: str = "", **kwargs: Any) -> Any:
    """A ``TrainConfig`` field declared with its flag (see ``Flag`` for the keywords)."""
    return field(default=default, metadata={"flag": Flag(flag, help, **kwargs)})


def check_setting(name: str, spec: Flag, value: Any) -> None:
    """ValueError naming ``name`` unless ``value`` fits the choices and bounds of ``spec``; None (unset,
    where the field allows it) always fits."""
    if value is None:
        return
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{name} must be one of {', '.join(spec.choices)}, got {value!r}")
    if spec.multiple is not None and (value % spec.multiple or (spec.low is not None and value < spec.low)):
        raise ValueError(f"{name} must be a multiple of {spec.multiple} and >= {spec.low}, got {value}")
    if spec.low is not None and value < spec.low:
        raise ValueError(f"{name} must be >= {spec.low}, got {value}")


@dataclass
class TrainConfig:
    """Everything about a run that is not a hyperparameter.

    ``data`` None means the embedded synthetic data set (generated on first use). ``imgsz`` None means
    256 for the embedded set and 640 otherwise. ``val_every`` 1 validates after every epoch (needed for
    per-epoch reports and early stopping); 0 validates only after the last epoch.
    """

    data: Optional[str] = setting(None, "--data", "data YAML (YOLOv5 format) (default: the embedded "
                                  "synthetic data set)", commands=TRAIN_AND_VAL)
    model: str = setting("n", "--model", "model size", choices=MODEL_SIZES)
    epochs: int = setting(100, "--epochs", "epochs to train", parse=int, low=1)
    imgsz: Optional[int] = setting(None, "--imgsz", f"square network input in pixels, a multiple of {STRIDE} "
                                   "(default: 256 for the embedded set, 640 otherwise; for val: the "
                                   "checkpoint's)", parse=int, low=STRIDE, multiple=STRIDE,
                                   commands=TRAIN_AND_VAL)
    batch: int = setting(16, "--batch", "total batch size over all processes", parse=int, low=1,
                         commands=TRAIN_AND_VAL)
    device: str = setting("", "--device", "'cpu', '0', 'cuda:1' (default: '' = CUDA when available, else "
                          "CPU)", commands=TRAIN_AND_VAL)
    workers: int = setting(2, "--workers", "data-loading worker processes per rank", parse=int, low=0,
                           commands=TRAIN_AND_VAL)
    seed: int = setting(0, "--seed", "seed of python, numpy and torch", parse=int)
    project: str = setting("runs/train", "--project", "parent folder of run folders")
    name: str = setting("exp", "--name", "run folder name; name2, name3, ... when taken")
    exist_ok: bool = setting(False, "--exist-ok", "reuse project/name if it exists", parse=bool)
    resume: Optional[str] = setting(None, "--resume", "continue a run from its weights/last.pt, with its "
                                    "settings unless flags override them", metavar="LAST_PT")
    optimizer: str = setting("auto", "--optimizer", "optimizer (default: auto: AdamW for runs of under 10000 "
                             "planned steps of 64 images, else SGD with Nesterov momentum)",
                             choices=OPTIMIZER_CHOICES)
    cos_lr: bool = setting(False, "--cos-lr", "cosine learning-rate decay", parse=bool)
    # None: optim.nominal_batch decides
    nbs: Optional[int] = setting(None, "--nbs", "nominal batch: images per optimizer step, reached by "
                                 "gradient accumulation, or under Adam and AdamW by splitting a larger batch "
                                 "(default: 64 under SGD; under Adam and AdamW at most 8 on a CPU, the batch "
                                 "size on CUDA)", parse=int, low=1)
    # None: the process's CPUs, governed (detector.threads)
    threads: Optional[int] = setting(None, "--threads", "torch threads per rank, fixed (default: the CPUs "
                                     "this process may use, from affinity, cgroup quota and OMP_NUM_THREADS, "
                                     "fewer while the machine is busy)", parse=int, low=1,
                                     commands=TRAIN_AND_VAL)
    val_every: int = setting(1, "--val-every", "validate every N epochs; 0 = only after the last", parse=int,
                             low=0)
    save_weights: bool = setting(True, "--no-save", "do not write weights/last.pt and best.pt", parse=bool)
    # fp16 on CUDA, bf16 on CPUs with native bf16 (detector.precision), else fp32
    amp: bool = setting(True, "--no-amp", "train and validate in fp32 (default: fp16 on CUDA, bf16 training "
                        "on CPUs with AMX or AVX512-BF16)", parse=bool)
    sync_bn: bool = setting(False, "--sync-bn", "synchronised BatchNorm under DDP (CUDA only)", parse=bool)
    autoanchor: bool = setting(True, "--no-autoanchor", "keep the default anchors even when they fit the "
                               "labels poorly", parse=bool)
    cache_dir: Optional[str] = setting(None, "--cache-dir", "decoded-image cache folder (default: "
                                       "$YOLO_EVOLVE_CACHE/images, else ~/.cache/yolo-evolve/images)",
                                       commands=TRAIN_AND_VAL)
    conf_thres: float = setting(0.001, "--conf-thres", "validation score threshold", parse=float,
                                commands=TRAIN_AND_VAL)
    iou_thres: float = setting(0.6, "--iou-thres", "validation NMS IoU threshold", parse=float,
                               commands=TRAIN_AND_VAL)
    max_det: int = setting(300, "--max-det", "detections kept per image", parse=int, low=1,
                           commands=TRAIN_AND_VAL)
    progress: bool = True  # tqdm bar per epoch and a final table; the CLI's --quiet turns it off
    # quick tests and trials
    max_images: Optional[int] = setting(None, "--max-images", "use only the first N train and val images",
                                        parse=int, low=1, commands=TRAIN_AND_VAL)
    # Augmentation of whole batches as tensor ops (detector.batch_augment): on a CUDA device it runs there;
    # on CPU in the DataLoader. None: on for CUDA, off on CPU, where the per-image path is ~2x faster.
    batch_augment: Optional[bool] = None

    def __post_init__(self) -> None:
        for f, spec in flagged_fields():
            check_setting(f.name, spec, getattr(self, f.name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def flagged_fields() -> Iterator[tuple[Field, Flag]]:
    """The ``TrainConfig`` fields that have a flag, in declaration order."""
    for f in fields(TrainConfig):
        spec = f.metadata.get("flag")
        if spec is not None:
            yield f, spec
