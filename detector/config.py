"""Configuration of one training run (``TrainConfig``), shared by the CLI, evolution trials and tests."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

MODEL_SIZES = ("n", "s", "m")
OPTIMIZER_CHOICES = ("auto", "SGD", "Adam", "AdamW")


@dataclass
class TrainConfig:
    """Everything about a run that is not a hyperparameter.

    ``data`` None means the embedded synthetic data set (generated on first use). ``imgsz`` None means
    256 for the embedded set and 640 otherwise. ``val_every`` 1 validates after every epoch (needed for
    per-epoch reports and early stopping); 0 validates only after the last epoch.
    """

    data: Optional[str] = None
    model: str = "n"
    epochs: int = 100
    imgsz: Optional[int] = None
    batch: int = 16
    device: str = ""  # "" = cuda:0 when available, else cpu; "cpu", "0", "cuda:1"
    workers: int = 2
    seed: int = 0
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    resume: Optional[str] = None  # path to a last.pt to continue from
    optimizer: str = "auto"  # SGD, Adam, AdamW, or auto: from the planned steps (optim.choose_optimizer)
    cos_lr: bool = False
    nbs: Optional[int] = None  # images per optimizer step; None: optim.nominal_batch decides
    threads: Optional[int] = None  # torch threads; None: the process's CPUs, governed (detector.threads)
    val_every: int = 1
    save_weights: bool = True  # last.pt / best.pt in the run folder
    amp: bool = True  # fp16 on CUDA, bf16 on CPUs with native bf16 (detector.precision), else fp32
    sync_bn: bool = False  # only under DDP
    autoanchor: bool = True
    # decoded-image cache; default ~/.cache/yolo-evolve/images ($YOLO_EVOLVE_CACHE/images)
    cache_dir: Optional[str] = None
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    progress: bool = True  # tqdm bar per epoch and a final table
    max_images: Optional[int] = None  # use only the first N train/val images (quick tests and trials)
    # Augmentation of whole batches as tensor ops (detector.batch_augment): on a CUDA device it runs there;
    # on CPU in the DataLoader. None: on for CUDA, off on CPU, where the per-image path is ~2x faster.
    batch_augment: Optional[bool] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in MODEL_SIZES:
            raise ValueError(f"model must be one of {MODEL_SIZES}, got {self.model!r}")
        if self.optimizer not in OPTIMIZER_CHOICES:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZER_CHOICES)}, "
                             f"got {self.optimizer!r}")
        for name in ("epochs", "batch", "nbs", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.imgsz is not None and (self.imgsz < 32 or self.imgsz % 32):
            raise ValueError(f"imgsz must be a multiple of 32 and >= 32, got {self.imgsz}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
