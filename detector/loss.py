"""The training loss of the detector: target assignment, CIoU box loss, objectness and class BCE.

Target assignment: a label is matched to every anchor whose width and height ratios to the label are
both below ``anchor_t`` (max(r, 1/r) < anchor_t), at every level. Besides the cell holding the label
centre, the two neighbouring cells nearest to the centre (one along x, one along y) also predict it;
the decoded centre offset 2*sigmoid - 0.5 spans (-0.5, 1.5) so those cells can reach it.

Hyperparameters used (all from the hyp dict, given unscaled: this class applies the scaling):

- ``box``: CIoU loss gain, times 3 / nl.
- ``obj``: objectness gain, times (imgsz / 640)^2 * 3 / nl; objectness target is the detached IoU of the
  matched prediction (clamped at 0), and levels are weighted 4.0 / 1.0 / 0.4 (P3 / P4 / P5).
- ``cls``: class gain, times nc / 80 * 3 / nl (no class loss with one class).
- ``cls_pw``, ``obj_pw``: BCE positive weights of the class and objectness terms.
- ``fl_gamma``: when > 0, both BCE terms become focal losses (gamma = fl_gamma, alpha = 0.25).
- ``anchor_t``: the ratio threshold of target assignment above.
- ``iou_t``: accepted and unused. It was the IoU threshold of the anchor-IoU assignment that earlier
  YOLO versions used; the ratio rule above replaced it and YOLOv5 kept the key, unused, in its hyp files.
  It is kept here too so that hyp files stay interchangeable in both directions.

The loss is always computed in fp32 with autocast disabled, so fp16 predictions cannot overflow it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from detector.hyp import DEFAULT_HYP
from detector.model import Model

OBJ_BALANCE = (4.0, 1.0, 0.4)  # P3, P4, P5: small-object levels have many more (mostly empty) cells
FOCAL_ALPHA = 0.25
NEIGHBOUR_OFFSET = 0.5


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired boxes, both (n, 4) xywh: IoU minus centre-distance and aspect terms."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    w1, h1, w2, h2 = w1.clamp(min=eps), h1.clamp(min=eps), w2.clamp(min=eps), h2.clamp(min=eps)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = ((torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(min=0)
             * (torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)).clamp(min=0))
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    # Smallest enclosing box: its diagonal normalises the centre distance.
    cw = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)
    ch = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    diag2 = cw ** 2 + ch ** 2 + eps
    dist2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (dist2 / diag2 + v * alpha)


class FocalBCE(nn.Module):
    """Focal loss around a BCE-with-logits: down-weights easy examples by (1 - p_t)^gamma."""

    def __init__(self, bce: nn.BCEWithLogitsLoss, gamma: float, alpha: float = FOCAL_ALPHA) -> None:
        super().__init__()
        self.bce = bce
        self.bce.reduction = "none"
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.bce(logits, target)
        p = torch.sigmoid(logits)
        p_t = target * p + (1 - target) * (1 - p)
        alpha_t = target * self.alpha + (1 - target) * (1 - self.alpha)
        return (loss * alpha_t * (1.0 - p_t) ** self.gamma).mean()


@dataclass
class LevelTargets:
    """Positive samples of one output level: where they are and what they should predict."""

    img: torch.Tensor  # (n,) image index in the batch
    anchor: torch.Tensor  # (n,) anchor index within the level
    gj: torch.Tensor  # (n,) cell row
    gi: torch.Tensor  # (n,) cell column
    box: torch.Tensor  # (n, 4) x, y offset from the cell corner and w, h, in grid units
    cls: torch.Tensor  # (n,) class index
    anchor_wh: torch.Tensor  # (n, 2) matched anchor size in grid units

    def __len__(self) -> int:
        return int(self.img.numel())


class DetectionLoss:
    """Callable loss: ``loss(preds, targets) -> (total * batch_size, detached [box, obj, cls])``.

    ``hyp`` is the plain hyp dict; keys it lacks take the defaults of ``detector.hyp``.

    ``imgsz`` scales the objectness gain; by default it is read from the input size of each batch.
    Anchors are read from the model at every call, so AutoAnchor may change them after construction.
    """

    def __init__(self, model: Model, hyp: dict[str, float], imgsz: int | None = None,
                 label_smoothing: float = 0.0) -> None:
        model = getattr(model, "module", model)  # accept a DDP-wrapped model
        hyp = {**DEFAULT_HYP, **hyp}  # a partial dict (an old checkpoint's) takes the file defaults
        self.detect = model.detect
        self.nc = int(model.nc)
        self.nl = int(model.detect.nl)
        self.na = int(model.detect.na)
        self.strides = [float(v) for v in model.detect.stride.tolist()]  # floats: no device sync per call
        self.imgsz = imgsz
        self.anchor_t = float(hyp["anchor_t"])
        self.box_gain = float(hyp["box"]) * 3 / self.nl
        self.cls_gain = float(hyp["cls"]) * self.nc / 80 * 3 / self.nl
        self.obj_gain = float(hyp["obj"]) * 3 / self.nl  # times (imgsz / 640)^2 per call
        if self.nl != len(OBJ_BALANCE):
            raise ValueError(f"the loss expects {len(OBJ_BALANCE)} output levels, got {self.nl}")
        self.balance = OBJ_BALANCE
        # Label smoothing: positives aim at 1 - eps/2, negatives at eps/2.
        self.cls_pos, self.cls_neg = 1.0 - 0.5 * label_smoothing, 0.5 * label_smoothing
        self.cls_pw = float(hyp["cls_pw"])
        self.obj_pw = float(hyp["obj_pw"])
        self.fl_gamma = float(hyp["fl_gamma"])
        self._criteria: dict[torch.device, tuple[nn.Module, nn.Module]] = {}

    def _bce(self, device: torch.device) -> tuple[nn.Module, nn.Module]:
        # pos_weight must live on the device of the predictions, which is known only at call time.
        if device not in self._criteria:
            bce_cls: nn.Module = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.cls_pw], device=device))
            bce_obj: nn.Module = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.obj_pw], device=device))
            if self.fl_gamma > 0:
                bce_cls, bce_obj = FocalBCE(bce_cls, self.fl_gamma), FocalBCE(bce_obj, self.fl_gamma)
            self._criteria[device] = (bce_cls, bce_obj)
        return self._criteria[device]

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = preds[0].device
        with torch.autocast(device_type=device.type, enabled=False):
            preds = [p.float() for p in preds]
            targets = targets.to(device=device, dtype=torch.float32)
            return self._compute(preds, targets)

    def _compute(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = preds[0].device
        bce_cls, bce_obj = self._bce(device)
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        for i, (pi, t) in enumerate(zip(preds, self.build_targets(preds, targets))):
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=device)
            if len(t):
                ps = pi[t.img, t.anchor, t.gj, t.gi]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * t.anchor_wh
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), t.box)
                lbox = lbox + (1.0 - iou).mean()
                tobj[t.img, t.anchor, t.gj, t.gi] = iou.detach().clamp(min=0).to(tobj.dtype)
                if self.nc > 1:  # with one class the objectness already says everything
                    tcls = torch.full_like(ps[:, 5:], self.cls_neg)
                    tcls[torch.arange(len(t), device=device), t.cls] = self.cls_pos
                    lcls = lcls + bce_cls(ps[:, 5:], tcls)
            lobj = lobj + bce_obj(pi[..., 4], tobj) * self.balance[i]
        imgsz = self.imgsz or preds[0].shape[2] * self.strides[0]
        lbox = lbox * self.box_gain
        lobj = lobj * self.obj_gain * (imgsz / 640) ** 2
        lcls = lcls * self.cls_gain
        batch = preds[0].shape[0]
        return (lbox + lobj + lcls) * batch, torch.stack((lbox, lobj, lcls)).detach()

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor) -> list[LevelTargets]:
        """Assign labels (N, 6) [img, cls, xc, yc, w, h] normalised to anchors and cells of each level."""
        device = preds[0].device
        targets = targets.to(device=device, dtype=torch.float32).reshape(-1, 6)
        nt = targets.shape[0]
        anchor_idx = torch.arange(self.na, device=device, dtype=torch.float32).view(self.na, 1, 1)
        # (na, nt, 7): every label once per anchor, with the anchor index appended.
        tiled = torch.cat((targets.unsqueeze(0).expand(self.na, nt, 6), anchor_idx.expand(self.na, nt, 1)), 2)
        g = NEIGHBOUR_OFFSET
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device,
                               dtype=torch.float32) * g
        out: list[LevelTargets] = []
        for i, pi in enumerate(preds):
            h, w = pi.shape[2], pi.shape[3]
            anchors = self.detect.anchors[i].to(device=device, dtype=torch.float32) / self.strides[i]
            scale = torch.tensor([1, 1, w, h, w, h, 1], device=device, dtype=torch.float32)
            t = tiled * scale
            if nt:
                ratio = t[..., 4:6] / anchors[:, None, :]
                keep = torch.max(ratio, 1 / ratio).amax(2) < self.anchor_t
                t = t[keep]
                gxy = t[:, 2:4]
                gxy_inv = torch.tensor([w, h], device=device, dtype=torch.float32) - gxy
                # Neighbours on the side the centre leans towards; not beyond the image border.
                left, up = ((gxy % 1 < g) & (gxy > 1)).T
                right, down = ((gxy_inv % 1 < g) & (gxy_inv > 1)).T
                which = torch.stack((torch.ones_like(left), left, up, right, down))
                t = t.unsqueeze(0).expand(5, -1, -1)[which]
                shift = (torch.zeros_like(gxy)[None] + offsets[:, None])[which]
            else:
                t = t.reshape(0, 7)
                shift = torch.zeros((0, 2), device=device)
            gxy = t[:, 2:4]
            gij = (gxy - shift).long()
            gi = gij[:, 0].clamp(0, w - 1)
            gj = gij[:, 1].clamp(0, h - 1)
            a = t[:, 6].long()
            out.append(LevelTargets(
                img=t[:, 0].long(), anchor=a, gj=gj, gi=gi,
                box=torch.cat((gxy - torch.stack((gi, gj), 1), t[:, 4:6]), 1),
                cls=t[:, 1].long(), anchor_wh=anchors[a]))
        return out
