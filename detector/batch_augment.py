"""Training augmentation of whole batches as tensor operations, on whatever device the batch is on.

The per-image pipeline (``detector.augment``, numpy and Pillow in DataLoader workers) manages a few
hundred images/s per worker, far below what a GPU trial consumes. ``BatchAugmenter`` applies the same
hyps to a batch of letterboxed uint8 images (the validation-style samples that the DataLoader gathers from
the image cache for almost nothing) with batched torch operations, so on a GPU the work runs on the
GPU, and on a CPU it runs as a few large vectorised operations instead of one small one per image.

Per sample, random parameters come from one ``torch.Generator`` (reproducible for a seed); per batch:

- mosaic: each output is, with probability ``mosaic``, the 2x2 mosaic of itself and three images of
  the same batch around a random centre of a ``2 * size`` canvas (a few slice copies per sample).
- warp: one 3x3 projective matrix per sample (``degrees translate scale shear perspective``, composed
  as in ``detector.augment.perspective_matrix``), sampled bilinearly with ``grid_sample``; boxes follow
  through their four corners and are filtered like ``box_candidates``.
- copy_paste: box rectangles of another image of the batch pasted where they cover at most 30% of any
  existing box; pastes never overlap one another (the per-image path allows 30% there too).
- mixup: blend with another sample of the batch (a random derangement), weight ~ Beta(32, 32), drawn
  as the middle of 63 uniforms (the 32nd order statistic), so the generator drives it.
- HSV gains in float (no 8-bit HSV rounding), then flips.

Every key at 0 turns its part off; with all of them at 0 the output is the input, bit for bit.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detector.augment import PAD, AugmentConfig

# Columns of the per-sample uniform draws (drawn together, so turning one key on does not shift the
# draws of the others).
_MOSAIC, _XC, _YC, _PX, _PY, _ANGLE, _SCALE, _SHX, _SHY, _TX, _TY, _MIXUP, _H, _S, _V, _UD, _LR = range(17)
_OUTSIDE = -4.0  # a grid_sample coordinate beyond the image: samples padding (zero, i.e. grey)


def batch_seed(*keys: int) -> int:
    """A 63-bit seed mixed from non-negative integers, e.g. (seed, rank, epoch, batch)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def pixel_labels(targets: Tensor, size: int) -> Tensor:
    """Targets ``[b, cls, xc, yc, w, h]`` normalised -> ``[b, cls, x1, y1, x2, y2]`` in pixels."""
    xy, wh = targets[:, 2:4] * size, targets[:, 4:6] * size
    return torch.cat([targets[:, :2], xy - wh / 2, xy + wh / 2], 1)


def normalised_targets(labels: Tensor, size: int) -> Tensor:
    """``[b, cls, x1, y1, x2, y2]`` pixels -> targets ``[b, cls, xc, yc, w, h]`` normalised, by image."""
    labels = labels[torch.sort(labels[:, 0], stable=True).indices]
    x1y1, x2y2 = labels[:, 2:4], labels[:, 4:6]
    return torch.cat([labels[:, :2], (x1y1 + x2y2) / 2 / size, (x2y2 - x1y1) / size], 1)


def box_candidates(full: Tensor, kept: Tensor, min_px: float = 2.0, min_area: float = 0.1,
                   max_ar: float = 100.0) -> Tensor:
    """``detector.augment.box_candidates`` on tensors: sides > ``min_px``, more than ``min_area`` of the
    untruncated box visible, aspect ratio below ``max_ar``."""
    w, h = kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]
    full_area = (full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1])
    ar = torch.maximum(w / (h + 1e-16), h / (w + 1e-16))
    return (w > min_px) & (h > min_px) & (w * h / (full_area + 1e-16) > min_area) & (ar < max_ar)


def transform_boxes(xyxy: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Boxes ``(n, 4)`` through their matrices ``(n, 3, 3)``: the box enclosing the four warped corners,
    and whether all four stayed in front of the horizon (a strong perspective can send them behind)."""
    corners = xyxy[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(-1, 4, 2)
    pts = torch.cat([corners, torch.ones_like(corners[..., :1])], -1) @ m.transpose(1, 2)
    valid = (pts[..., 2] > 1e-6).all(1)
    xy = pts[..., :2] / pts[..., 2:].clamp_min(1e-6)
    return torch.cat([xy.amin(1), xy.amax(1)], 1), valid


def warp_labels(labels: Tensor, m: Tensor, in_size: Tensor, out_size: int) -> Tensor:
    """``detector.augment.warp_labels`` for labels ``[b, cls, x1, y1, x2, y2]``, each with its own
    matrix ``m`` (n, 3, 3) and square input side ``in_size`` (n,)."""
    if not len(labels):
        return labels
    xyxy = labels[:, 2:6]
    full, valid = transform_boxes(xyxy, m)
    lim = in_size.to(xyxy.dtype)[:, None]
    inside = torch.minimum(xyxy.clamp_min(0), lim)  # there are no pixels beyond the input
    visible, valid_inside = transform_boxes(inside, m)
    full = torch.where(valid[:, None], full, visible)
    kept = visible.clamp(0, out_size)
    keep = box_candidates(full, kept) & valid_inside
    return torch.cat([labels[:, :2], kept], 1)[keep]


def hsv_gains(img: Tensor, gains: Tensor) -> Tensor:
    """Multiply hue, saturation and value of float RGB ``img`` (b, 3, h, w) in [0, 255] by ``gains``
    (b, 3). Hue is an angle, so its gain wraps around the colour circle, as in the per-image path."""
    r, g, b = img.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    c = v - torch.minimum(torch.minimum(r, g), b)
    safe = c.clamp_min(1e-6)
    hue = torch.where(v == r, (g - b) / safe, torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    gh, gs, gv = (gains[:, i, None, None] for i in range(3))
    hue = torch.where(hue < 0, hue + 6, hue) * gh  # the gain scales the angle in [0, 6)
    hue = hue - 6 * torch.floor(hue / 6)  # (floor is much faster than remainder on CPU)
    sat = (c / v.clamp_min(1e-6) * gs).clamp(0, 1)
    v = (v * gv).clamp(0, 255)
    chroma = v * sat
    out = []
    for n in (5.0, 3.0, 1.0):  # the standard HSV -> RGB: channel = v - chroma * clamp(min(k, 4 - k), 0, 1)
        k = hue + n
        k = torch.where(k >= 6, k - 6, k)
        out.append(v - chroma * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(out, 1)


def derangement(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """A random partner for each of ``n`` items, never itself (for n > 1): a random cycle."""
    order = torch.randperm(n, generator=generator, device=device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner


def _matrices(u: Tensor, in_size: Tensor, out: int, cfg: AugmentConfig) -> Tensor:
    # T @ Sh @ R @ P @ C per sample, as detector.augment.perspective_matrix, from uniforms in [0, 1).
    n = len(u)

    def sym(col: int, amp: float) -> Tensor:  # uniform in [-amp, amp]
        return (2 * u[:, col] - 1) * amp

    eye = torch.eye(3, device=u.device, dtype=u.dtype).repeat(n, 1, 1)
    c, p, r, sh, t = eye.clone(), eye.clone(), eye.clone(), eye.clone(), eye.clone()
    c[:, 0, 2] = c[:, 1, 2] = -in_size.to(u.dtype) / 2
    p[:, 2, 0], p[:, 2, 1] = sym(_PX, cfg.perspective), sym(_PY, cfg.perspective)
    a = sym(_ANGLE, math.radians(cfg.degrees))
    s = 1 + sym(_SCALE, cfg.scale)
    r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1] = s * a.cos(), s * a.sin(), -s * a.sin(), s * a.cos()
    sh[:, 0, 1] = torch.tan(sym(_SHX, math.radians(cfg.shear)))
    sh[:, 1, 0] = torch.tan(sym(_SHY, math.radians(cfg.shear)))
    t[:, 0, 2] = (0.5 + sym(_TX, cfg.translate)) * out
    t[:, 1, 2] = (0.5 + sym(_TY, cfg.translate)) * out
    return t @ sh @ r @ p @ c


class BatchAugmenter:
    """The augmentation hyps of ``cfg`` applied to batches of ``size x size`` letterboxed samples.

    Call with uint8 images ``(b, 3, size, size)``, targets ``(n, 6)`` ``[b, cls, xc, yc, w, h]``
    normalised (the collate format), each image's content box ``(b, 4)`` ``[x1, y1, x2, y2]`` in pixels
    (where the letterbox put the picture) and a ``torch.Generator`` on the images' device. Returns the
    augmented uint8 images and targets in the same formats, on the same device.
    """

    def __init__(self, cfg: AugmentConfig, size: int, max_ioa: float = 0.3, tries: int = 3):
        self.cfg, self.size, self.max_ioa, self.tries = cfg, int(size), float(max_ioa), int(tries)

    @staticmethod
    def generator(device: torch.device | str, *keys: int) -> torch.Generator:
        """A generator on ``device`` seeded from ``keys`` (e.g. seed, rank, epoch, batch index)."""
        g = torch.Generator(device=device)
        g.manual_seed(batch_seed(*keys))
        return g

    @property
    def geometric(self) -> bool:
        c = self.cfg
        return any(v > 0 for v in (c.mosaic, c.degrees, c.translate, c.scale, c.shear, c.perspective))

    def __call__(self, imgs: Tensor, targets: Tensor, content: Tensor,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
        cfg, s, dev = self.cfg, self.size, imgs.device
        if imgs.shape[-2:] != (s, s):
            raise ValueError(f"expected {s}x{s} images, got {tuple(imgs.shape[-2:])}")
        b = len(imgs)
        u = torch.rand((b, 17), generator=generator, device=dev)
        labels = pixel_labels(targets.to(dev, torch.float32), s)
        src = imgs.float() - PAD  # zero is grey: grid_sample's zero padding becomes the grey border
        out = src
        if self.geometric:
            out, labels_out = self._geometric(src, labels, content.to(dev), u, generator)
        else:
            labels_out = labels
        if cfg.copy_paste > 0:
            out, labels_out = self._copy_paste(out, labels_out, src, labels, generator)
        if cfg.mixup > 0:
            out, labels_out = self._mixup(out, labels_out, u, generator)
        out = out + PAD
        if cfg.hsv_h or cfg.hsv_s or cfg.hsv_v:
            amp = torch.tensor([cfg.hsv_h, cfg.hsv_s, cfg.hsv_v], device=dev)
            out = hsv_gains(out, 1 + (2 * u[:, _H:_V + 1] - 1) * amp)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
        if cfg.flipud > 0:
            out, labels_out = self._flip(out, labels_out, u[:, _UD] < cfg.flipud, vertical=True)
        if cfg.fliplr > 0:
            out, labels_out = self._flip(out, labels_out, u[:, _LR] < cfg.fliplr, vertical=False)
        return out, normalised_targets(labels_out, s)

    # -- mosaic and warp ------------------------------------------------------------------------------

    def _geometric(self, src: Tensor, labels: Tensor, content: Tensor, u: Tensor,
                   g: torch.Generator) -> tuple[Tensor, Tensor]:
        cfg, s, dev = self.cfg, self.size, src.device
        b = len(src)
        mosaic = u[:, _MOSAIC] < cfg.mosaic
        quads = 4 if cfg.mosaic > 0 else 1
        in_size = torch.where(mosaic, 2 * s, s)
        m = _matrices(u, in_size, s, cfg)
        # Each output's quadrant k shows image partners[:, k] moved by offsets[:, k] (its letterbox pixels
        # -> canvas pixels); a plain sample is quadrant 0 with no offset and a size x size canvas.
        partners = torch.arange(b, device=dev)[:, None].repeat(1, quads)
        offsets = torch.zeros((b, quads, 2), device=dev)
        used = torch.zeros((b, quads), dtype=torch.bool, device=dev)
        used[:, 0] = True
        if quads == 4:
            others = torch.randint(0, b, (b, 3), generator=g, device=dev)
            partners[:, 1:] = torch.where(mosaic[:, None], others, partners[:, 1:])
            centre = (s / 2 + u[:, [_XC, _YC]] * s).floor()
            used[:, 1:] = mosaic[:, None]

        # A 2x canvas per sample (grey = zero), the plain ones with their image in its top-left corner:
        # one grid_sample of size x size outputs, the same work whatever the mix of mosaic and plain.
        canvas = src
        if quads == 4:
            canvas = src.new_zeros((b, src.shape[1], 2 * s, 2 * s))
            boxes = content[partners].float()
            offsets = torch.where(mosaic[:, None, None], _mosaic_offsets(boxes, centre, s), offsets)
            # One host sync for the layout; then 4 slice copies per sample (disjoint rectangles).
            for i, j, x1, y1, x2, y2, sx, sy in _mosaic_rects(boxes, offsets, used, partners, s).tolist():
                canvas[i, :, y1:y2, x1:x2] = src[j, :, sy:sy + y2 - y1, sx:sx + x2 - x1]

        # Output pixel centres -> canvas points through the inverse warp.
        ys, xs = torch.meshgrid(torch.arange(s, device=dev, dtype=torch.float32) + 0.5,
                                torch.arange(s, device=dev, dtype=torch.float32) + 0.5, indexing="ij")
        pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)
        inv = torch.linalg.inv_ex(m).inverse  # inv_ex: no host sync for an error check on CUDA
        q = pts @ inv.transpose(1, 2)
        z = q[..., 2:]
        grid = q[..., :2] / z.clamp_min(1e-6) * (2.0 / canvas.shape[-1]) - 1
        grid = torch.where(z > 1e-6, grid, _OUTSIDE)  # behind the horizon: grey
        out = F.grid_sample(canvas, grid.view(b, s, s, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=False)

        if quads == 4 and len(labels):
            # Every label of image j goes to each (output, quadrant) that shows j.
            match = (partners.reshape(-1, 1) == labels[None, :, 0].long()) & used.reshape(-1, 1)
            row, idx = match.nonzero(as_tuple=True)
            labels = labels[idx].clone()
            labels[:, 0] = (row // 4).to(labels.dtype)
            labels[:, 2:6] += offsets.reshape(-1, 2)[row].repeat(1, 2)
        i = labels[:, 0].long()
        return out, warp_labels(labels, m[i], in_size[i], s)

    # -- copy-paste -----------------------------------------------------------------------------------

    def _copy_paste(self, out: Tensor, labels: Tensor, src: Tensor, src_labels: Tensor,
                    g: torch.Generator) -> tuple[Tensor, Tensor]:
        s, dev, tries = self.size, out.device, self.tries
        b = len(out)
        # Output t receives boxes of image partner[t] (its letterboxed pixels, before any warp).
        partner = derangement(b, g, dev)
        target = torch.argsort(partner)[src_labels[:, 0].long()]
        chosen = torch.rand(len(src_labels), generator=g, device=dev) < self.cfg.copy_paste
        xy1 = src_labels[:, 2:4].round().clamp_min(0)
        xy2 = src_labels[:, 4:6].round().clamp_max(s)
        wh = xy2 - xy1
        chosen &= (wh > 2).all(1)
        pos = (torch.rand((len(src_labels), tries, 2), generator=g, device=dev)
               * (s - wh[:, None, :] + 1)).floor()
        cand = torch.cat([pos, pos + wh[:, None, :]], -1)  # (n, tries, 4)
        # A try is good when it covers at most max_ioa of every box already on its target; take the first.
        same = target[:, None] == labels[None, :, 0].long()
        bad = ((_ioa(cand, labels[:, 2:6]) > self.max_ioa) & same[:, None, :]).any(-1)
        first = (~bad).float().argmax(1)
        chosen &= (~bad).any(1)
        box = cand[torch.arange(len(cand), device=dev), first]
        # Pastes on one target never overlap: a later candidate yields to an earlier chosen one.
        overlap = (_ioa(box[:, None], box)[:, 0] > 0) & (target[:, None] == target[None, :])
        earlier = torch.ones_like(overlap).tril(-1)
        chosen &= ~(overlap & earlier & chosen[None, :]).any(1)
        keep = chosen.nonzero()[:, 0]
        if not len(keep):
            return out, labels
        box, t, n = box[keep].long(), target[keep], len(keep)
        # Paint paste ids with a 2-D difference array (disjoint rectangles, so the sums are the ids).
        ids = torch.arange(1, n + 1, device=dev)
        paint = torch.zeros((b, s + 1, s + 1), dtype=torch.int64, device=dev)
        for (yi, xi), sign in (((1, 0), 1), ((1, 2), -1), ((3, 0), -1), ((3, 2), 1)):
            paint.index_put_((t, box[:, yi], box[:, xi]), sign * ids, accumulate=True)
        paint = paint.cumsum(1).cumsum(2)[:, :s, :s]
        # Each painted pixel reads the same pixel of its box in the source image, shifted.
        src_img = torch.cat([torch.zeros(1, device=dev, dtype=torch.long), partner[t]])
        shift = torch.cat([torch.zeros((1, 2), device=dev, dtype=torch.long),
                           xy1[keep].long() - box[:, :2]])
        ys = torch.arange(s, device=dev)[None, :, None]
        xs = torch.arange(s, device=dev)[None, None, :]
        flat = (src_img[paint] * s + ys + shift[paint, 1]) * s + xs + shift[paint, 0]
        pasted = src.permute(0, 2, 3, 1).reshape(-1, src.shape[1])[flat.clamp(0, b * s * s - 1)]
        out = torch.where((paint > 0)[:, None], pasted.permute(0, 3, 1, 2), out)
        new = torch.cat([t[:, None].to(labels.dtype), src_labels[keep, 1:2], box.to(labels.dtype)], 1)
        return out, torch.cat([labels, new], 0)

    # -- mixup and flips ------------------------------------------------------------------------------

    def _mixup(self, out: Tensor, labels: Tensor, u: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        b, dev = len(out), out.device
        if b < 2:
            return out, labels
        partner = derangement(b, g, dev)
        ratio = torch.rand((b, 63), generator=g, device=dev).kthvalue(32, 1).values  # ~ Beta(32, 32)
        mixed = u[:, _MIXUP] < self.cfg.mixup
        w = torch.where(mixed, ratio, 1.0)[:, None, None, None]
        out = out * w + out[partner] * (1 - w)
        # The partner's labels join every output that blended it in.
        target = torch.argsort(partner)[labels[:, 0].long()]
        extra = labels[mixed[target]].clone()
        extra[:, 0] = target[mixed[target]].to(labels.dtype)
        return out, torch.cat([labels, extra], 0)

    def _flip(self, out: Tensor, labels: Tensor, flip: Tensor, vertical: bool) -> tuple[Tensor, Tensor]:
        dim, (c1, c2) = (-2, (3, 5)) if vertical else (-1, (2, 4))
        out = torch.where(flip[:, None, None, None], out.flip(dim), out)
        f = flip[labels[:, 0].long()]
        labels = labels.clone()
        a, b = labels[:, c1].clone(), labels[:, c2].clone()
        labels[:, c1] = torch.where(f, self.size - b, a)
        labels[:, c2] = torch.where(f, self.size - a, b)
        return out, labels


def _mosaic_offsets(content: Tensor, centre: Tensor, s: int) -> Tensor:
    # As detector.augment.mosaic4: quadrant k's image (content w x h) touches the centre from the
    # top-left, top-right, bottom-left, bottom-right; the offset maps its letterbox pixels to the canvas.
    wh = content[..., 2:4] - content[..., 0:2]  # (b, 4, 2)
    c = centre[:, None, :]
    before = torch.tensor([[1, 1], [0, 1], [1, 0], [0, 0]], device=content.device, dtype=torch.bool)
    start = torch.where(before, (c - wh).clamp_min(0), c)  # canvas edge a1
    end = torch.where(before, c, (c + wh).clamp_max(2 * s))
    cut = torch.where(before, wh - (end - start), torch.zeros_like(wh))  # image pixels cut off, b1
    return start - cut - content[..., 0:2]


def _mosaic_rects(content: Tensor, offsets: Tensor, used: Tensor, partners: Tensor, s: int) -> Tensor:
    # Rows [sample, image, x1, y1, x2, y2, src_x1, src_y1] (int): the canvas rectangle each used
    # quadrant fills, cut to the canvas, and where that rectangle starts in its letterboxed image.
    start = torch.maximum(content[..., 0:2] + offsets, torch.zeros_like(offsets))
    end = torch.minimum(content[..., 2:4] + offsets, torch.full_like(offsets, 2 * s))
    idx = torch.nonzero(used)
    i, k = idx[:, 0], idx[:, 1]
    rows = [i[:, None], partners[i, k, None], start[i, k], end[i, k], start[i, k] - offsets[i, k]]
    return torch.cat([r.float() for r in rows], 1).long().cpu()


def _ioa(boxes: Tensor, others: Tensor) -> Tensor:
    # Fraction of each of ``others`` (m, 4) covered by each of ``boxes`` (..., 4): shape (..., m).
    lt = torch.maximum(boxes[..., None, :2], others[:, :2])
    rb = torch.minimum(boxes[..., None, 2:], others[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area = (others[:, 2:] - others[:, :2]).prod(-1)
    return inter / (area + 1e-9)
