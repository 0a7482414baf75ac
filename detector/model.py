"""The detector network: a YOLOv5-style CSP backbone, a PAN neck and an anchor-based detection head.

``Model(nc, size, anchors, na)`` builds the network for ``nc`` classes at size ``n``, ``s`` or ``m``.
In training mode ``forward`` returns the raw per-level outputs that ``detector.loss`` consumes; in eval
mode it also decodes them into boxes in pixels of the network input, ready for non-maximum suppression.
Anchors live in a buffer of ``Detect`` (pixels of the network input) so that they travel with the
weights and AutoAnchor (``detector.anchors``) can replace them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from detector.anchors import default_anchors

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class SizeSpec:
    """Depth and width multiples of one model size, applied to the base repeats and channels."""

    depth: float
    width: float


SIZES: dict[str, SizeSpec] = {
    "n": SizeSpec(depth=0.33, width=0.25),
    "s": SizeSpec(depth=0.33, width=0.50),
    "m": SizeSpec(depth=0.67, width=0.75),
}


def _channels(base: int, width: float, divisor: int = 8) -> int:
    # Multiples of 8 keep tensor-core friendly shapes at every width.
    return int(math.ceil(base * width / divisor) * divisor)


def _repeats(base: int, depth: float) -> int:
    return max(round(base * depth), 1)


class Conv(nn.Module):
    """Conv2d without bias, BatchNorm, SiLU: the building block of every other module."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, p: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2 if p is None else p, bias=False)
        # eps/momentum as in YOLOv5 so weights and learning-rate hyps behave the same way there and here.
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 then 3x3 convolution, with a residual connection when asked and shapes allow it."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c_in, c_out, 1)
        self.cv2 = Conv(c_out, c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block: one half of the channels goes through ``n`` bottlenecks, the other half bypasses them."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        hidden = c_out // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(c_in, hidden, 1)
        self.cv3 = Conv(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast form: three chained 5x5 max-pools equal pools of 5, 9 and 13."""

    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(hidden * 4, c_out, 1)
        self.pool = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat((x, y1, y2, self.pool(y2)), dim=1))


class Backbone(nn.Module):
    """Stem and four Conv/C3 stages down to stride 32, ending in SPPF; returns P3, P4, P5 features."""

    def __init__(self, spec: SizeSpec) -> None:
        super().__init__()
        c = [_channels(b, spec.width) for b in (64, 128, 256, 512, 1024)]
        self.stem = Conv(3, c[0], k=6, s=2, p=2)  # stride 2
        self.stage2 = nn.Sequential(Conv(c[0], c[1], 3, 2), C3(c[1], c[1], _repeats(3, spec.depth)))
        self.stage3 = nn.Sequential(Conv(c[1], c[2], 3, 2), C3(c[2], c[2], _repeats(6, spec.depth)))
        self.stage4 = nn.Sequential(Conv(c[2], c[3], 3, 2), C3(c[3], c[3], _repeats(9, spec.depth)))
        self.stage5 = nn.Sequential(Conv(c[3], c[4], 3, 2), C3(c[4], c[4], _repeats(3, spec.depth)),
                                    SPPF(c[4], c[4]))
        self.out_channels = (c[2], c[3], c[4])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        return p3, p4, self.stage5(p4)


class PAN(nn.Module):
    """Path-aggregation neck: a top-down pass (upsample, concat, C3) then a bottom-up pass (stride-2 conv)."""

    def __init__(self, spec: SizeSpec, channels: tuple[int, int, int]) -> None:
        super().__init__()
        c3, c4, c5 = channels
        n = _repeats(3, spec.depth)
        self.reduce5 = Conv(c5, c4, 1)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.td4 = C3(2 * c4, c4, n, shortcut=False)
        self.reduce4 = Conv(c4, c3, 1)
        self.td3 = C3(2 * c3, c3, n, shortcut=False)
        self.down3 = Conv(c3, c3, 3, 2)
        self.bu4 = C3(2 * c3, c4, n, shortcut=False)
        self.down4 = Conv(c4, c4, 3, 2)
        self.bu5 = C3(2 * c4, c5, n, shortcut=False)
        self.out_channels = (c3, c4, c5)

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = feats
        lat5 = self.reduce5(p5)
        lat4 = self.reduce4(self.td4(torch.cat((self.up(lat5), p4), dim=1)))
        out3 = self.td3(torch.cat((self.up(lat4), p3), dim=1))
        out4 = self.bu4(torch.cat((self.down3(out3), lat4), dim=1))
        out5 = self.bu5(torch.cat((self.down4(out4), lat5), dim=1))
        return [out3, out4, out5]


class Detect(nn.Module):
    """Anchor-based head: one 1x1 convolution per level predicting ``na * (5 + nc)`` values per cell.

    Each prediction is (x, y, w, h, objectness, class scores...) as logits; ``decode`` turns them into
    boxes in pixels: xy = (2*sigmoid - 0.5 + cell) * stride, wh = (2*sigmoid)^2 * anchor.
    """

    def __init__(self, nc: int, anchors: np.ndarray, channels: tuple[int, ...],
                 strides: tuple[int, ...] = STRIDES) -> None:
        super().__init__()
        anchors = np.asarray(anchors, dtype=np.float32)
        if anchors.ndim != 3 or anchors.shape[0] != len(strides) or anchors.shape[2] != 2:
            raise ValueError(f"anchors must have shape ({len(strides)}, na, 2), got {anchors.shape}")
        self.nc = nc
        self.no = nc + 5
        self.nl = len(strides)
        self.na = int(anchors.shape[1])
        self.register_buffer("anchors", torch.from_numpy(anchors.copy()))
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32), persistent=False)
        self._strides = [float(s) for s in strides]  # python floats: decoding needs no device sync
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in channels)
        self._grids: dict[tuple, torch.Tensor] = {}
        self._init_biases()

    def _init_biases(self) -> None:
        # Start from calibrated priors instead of p=0.5 everywhere: about 8 objects per 640x640 image
        # spread over the cells of a level, and classes near uniform. Early losses are then sane.
        for conv, s in zip(self.m, self._strides):
            b = conv.bias.detach().view(self.na, self.no)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:] += math.log(0.6 / (self.nc - 0.99))

    def _grid(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, device)
        grid = self._grids.get(key)
        if grid is None:
            ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                    torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
            grid = torch.stack((xs, ys), dim=-1).view(1, 1, h, w, 2)
            self._grids[key] = grid
        return grid

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, x in enumerate(feats):
            y = self.m[i](x)
            b, _, h, w = y.shape
            out.append(y.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return out

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Raw level outputs -> (B, N, 5 + nc) [xc, yc, w, h in pixels, objectness, class probs], fp32."""
        decoded = []
        for i, r in enumerate(raw):
            b, _, h, w, _ = r.shape
            # fp32 so that pixel coordinates of large inputs keep their precision under fp16 autocast.
            y = r.float().sigmoid()
            xy = (y[..., :2] * 2 - 0.5 + self._grid(h, w, y.device)) * self._strides[i]
            wh = (y[..., 2:4] * 2) ** 2 * self.anchors[i].float().view(1, self.na, 1, 1, 2)
            decoded.append(torch.cat((xy, wh, y[..., 4:]), dim=-1).view(b, -1, self.no))
        return torch.cat(decoded, dim=1)


class Model(nn.Module):
    """The whole detector. ``names`` (class names) is a plain attribute the trainer may set."""

    def __init__(self, nc: int = 80, size: str = "n", anchors: np.ndarray | None = None,
                 na: int = 3) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"model size must be one of {tuple(SIZES)}, got {size!r}")
        if nc < 1:
            raise ValueError(f"number of classes must be >= 1, got {nc}")
        if anchors is None:
            anchors = default_anchors(na)
        spec = SIZES[size]
        self.size = size
        self.nc = nc
        self.names: list[str] = [str(i) for i in range(nc)]
        self.backbone = Backbone(spec)
        self.neck = PAN(spec, self.backbone.out_channels)
        self.detect = Detect(nc, np.asarray(anchors), self.neck.out_channels)
        self.na = self.detect.na
        self.nl = self.detect.nl

    @property
    def stride(self) -> torch.Tensor:
        return self.detect.stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` float (B, 3, H, W) in [0, 1], H and W multiples of 32.

        Training mode: list of ``nl`` raw tensors (B, na, H/s, W/s, 5 + nc).
        Eval mode: (decoded predictions (B, N, 5 + nc), the raw list).
        """
        raw = self.detect(self.neck(self.backbone(x)))
        if self.training:
            return raw
        return self.detect.decode(raw), raw

    @torch.no_grad()
    def set_anchors(self, anchors_px: np.ndarray | torch.Tensor) -> None:
        """Replace the anchors, (nl, na, 2) in pixels of the network input; the anchor count is fixed."""
        new = torch.as_tensor(np.asarray(anchors_px, dtype=np.float32) if not torch.is_tensor(anchors_px)
                              else anchors_px.detach().float().cpu())
        if tuple(new.shape) != tuple(self.detect.anchors.shape):
            raise ValueError(f"anchors must have shape {tuple(self.detect.anchors.shape)}, "
                             f"got {tuple(new.shape)}")
        self.detect.anchors.copy_(new.to(self.detect.anchors.device))
