"""MTCNN face detection with the P/R/O-Net weights that ship inside the facenet-pytorch wheel.

The three-stage cascade is run here rather than through facenet-pytorch's detect_face: the image
pyramid is built with OpenCV, candidate crops with one batched roi_align, and the nets run channels-last. On 2 CPU
cores that is several times faster (most of facenet-pytorch's time went into one torch
`interpolate` call per candidate box)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, roi_align

from .base import Face, FaceDetector
from .device import configure_cpu_threads, resolve_device

PNET_STRIDE, PNET_CELL = 2, 12


def _square(boxes: np.ndarray) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out = boxes.copy()
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou: float) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    keep = batched_nms(torch.from_numpy(boxes[:, :4].astype(np.float32)), torch.from_numpy(scores.astype(np.float32)),
                       torch.from_numpy(groups.astype(np.int64)), iou)
    return keep.numpy()


def _nms_min(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """NMS with overlap = intersection / smaller area: removes a box nested in a bigger one."""
    order = np.argsort(-scores)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(0, xx2 - xx1 + 1) * np.maximum(0, yy2 - yy1 + 1)
        overlap = inter / np.minimum(area[i], area[rest])
        order = rest[overlap <= thresh]
    return keep


class MTCNNDetector(FaceDetector):
    name = "mtcnn"

    def __init__(self, min_face_px: int = 24, min_prob: float = 0.9, device: str = "auto",
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 small_face_px: int = 0):
        configure_cpu_threads()
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet  # loads the wheel's data/*.pt

        self.device = resolve_device(device)
        self.min_prob, self.min_face_px = min_prob, min_face_px
        # faces between small_face_px and min_face_px are looked for only in the images a caller marks
        # `fine`: their pyramid levels (the largest ones) cost more than all the others together
        self.small_face_px = small_face_px if 0 < small_face_px < min_face_px else min_face_px
        self.thresholds, self.factor = thresholds, factor
        fmt = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self._fmt = fmt
        self.pnet = PNet().eval().to(self.device, memory_format=fmt)
        self.rnet = RNet().eval().to(self.device, memory_format=fmt)
        self.onet = ONet().eval().to(self.device, memory_format=fmt)

    def _tensor(self, batch: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float()
        t = (t - 127.5) * 0.0078125
        return t.contiguous(memory_format=self._fmt)

    def _scales(self, h: int, w: int, min_face_px: int | None = None) -> list[float]:
        m = PNET_CELL / (min_face_px or self.min_face_px)
        minl = min(h, w) * m
        scales = []
        while minl >= PNET_CELL:
            scales.append(m * self.factor ** len(scales))
            minl *= self.factor
        return scales

    def _fine_scales(self, h: int, w: int) -> list[float]:
        """The extra (larger) pyramid levels that find faces from small_face_px up to min_face_px."""
        if self.small_face_px >= self.min_face_px:
            return []
        top = PNET_CELL / self.min_face_px
        return [s for s in self._scales(h, w, self.small_face_px) if s > top * 1.01]

    def _level(self, images: list[np.ndarray], full: torch.Tensor, sw: int, sh: int) -> torch.Tensor:
        """One pyramid level. On a GPU it is resized there from the frames already uploaded (building
        it with OpenCV on the CPU and uploading each level starved the GPU); on CPU OpenCV is faster."""
        if self.device.type == "cuda":
            return F.interpolate(full, size=(sh, sw), mode="area")
        level = np.stack([cv2.resize(im, (sw, sh), interpolation=cv2.INTER_AREA) for im in images])
        return self._tensor(level)

    def _stage1(self, images: list[np.ndarray], full: torch.Tensor, fine: list[int], th: tuple,
                probe: list[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """P-Net over the pyramid; images of one call share a size, so each level is one batch.
        The fine levels run only on the images listed in `fine`; the images in `probe` get all of them
        but the largest (the costliest by far: it is the whole frame at full size)."""
        h, w = images[0].shape[:2]
        all_boxes, all_ids = [], []
        # fine levels first, largest first; each runs on the images that asked for it
        levels = []
        for k, scale in enumerate(self._fine_scales(h, w)):
            rows = sorted(set(fine) | (set(probe) if k > 0 else set()))
            if rows:
                levels.append((scale, np.asarray(rows)))
        levels += [(s, None) for s in self._scales(h, w)]
        for scale, sel in levels:
            sw, sh = int(w * scale + 1), int(h * scale + 1)
            if sel is None:
                level = self._level(images, full, sw, sh)
            else:
                level = self._level([images[i] for i in sel], full[torch.as_tensor(sel, device=full.device)], sw, sh)
            reg, prob = self.pnet(level)
            prob = prob[:, 1].cpu().numpy()
            reg = reg.cpu().numpy()
            ids, ys, xs = np.nonzero(prob >= th[0])
            if len(ids) == 0:
                continue
            score = prob[ids, ys, xs]
            r = reg[ids, :, ys, xs]
            if sel is not None:
                ids = sel[ids]  # rows of this level -> images of the whole batch
            q1 = np.floor((PNET_STRIDE * np.stack([xs, ys], 1) + 1) / scale)
            q2 = np.floor((PNET_STRIDE * np.stack([xs, ys], 1) + PNET_CELL) / scale)
            boxes = np.concatenate([q1, q2, score[:, None], r], 1).astype(np.float32)
            keep = _nms(boxes, score, ids, 0.5)
            all_boxes.append(boxes[keep])
            all_ids.append(ids[keep])
        if not all_boxes:
            return np.zeros((0, 9), np.float32), np.zeros(0, np.int64)
        boxes, ids = np.concatenate(all_boxes), np.concatenate(all_ids)
        keep = _nms(boxes, boxes[:, 4], ids, 0.7)
        boxes, ids = boxes[keep], ids[keep]
        w_, h_ = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        reg = boxes[:, 5:9]
        out = np.stack([boxes[:, 0] + reg[:, 0] * w_, boxes[:, 1] + reg[:, 1] * h_,
                        boxes[:, 2] + reg[:, 2] * w_, boxes[:, 3] + reg[:, 3] * h_, boxes[:, 4]], 1)
        return _square(out), ids

    def _roi_crops(self, full: torch.Tensor, ids: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
        """All candidate crops in one batched bilinear resample; parts of a box outside the image
        read as 0 (mid-grey after normalisation). Replaces one cv2.resize call per candidate."""
        rois = torch.from_numpy(np.concatenate([ids[:, None].astype(np.float32), boxes[:, :4].astype(np.float32)], 1))
        crops = roi_align(full, rois.to(full.device), output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=False)
        return crops.contiguous(memory_format=self._fmt)

    @torch.inference_mode()
    def _detect_same_size(self, images: list[np.ndarray], fine: list[int], th: tuple, min_prob: float,
                          probe: list[int] = ()) -> list[list[Face]]:
        full = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float()
        full = ((full - 127.5) * 0.0078125).contiguous()
        boxes, ids = self._stage1(images, full, fine, th, probe)
        fine_set = set(fine) | set(probe)
        result: list[list[Face]] = [[] for _ in images]
        if len(boxes) == 0:
            return result
        # stage 2: R-Net refines and rejects
        reg, prob = self.rnet(self._roi_crops(full, ids, boxes, 24))
        score = prob[:, 1].cpu().numpy()
        ok = score > th[1]
        boxes, ids, reg = boxes[ok], ids[ok], reg.cpu().numpy()[ok]
        boxes[:, 4] = score[ok]
        keep = _nms(boxes, boxes[:, 4], ids, 0.7)
        boxes = _square(_regress(boxes[keep], reg[keep]))
        ids = ids[keep]
        if len(boxes) == 0:
            return result
        # stage 3: O-Net gives the final box, score and 5 landmarks
        reg, points, prob = self.onet(self._roi_crops(full, ids, boxes, 48))
        score = prob[:, 1].cpu().numpy()
        ok = score > th[2]
        boxes, ids = boxes[ok], ids[ok]
        reg, points = reg.cpu().numpy()[ok], points.cpu().numpy()[ok]
        bw = boxes[:, 2] - boxes[:, 0] + 1
        bh = boxes[:, 3] - boxes[:, 1] + 1
        px = bw[:, None] * points[:, :5] + boxes[:, 0:1] - 1
        py = bh[:, None] * points[:, 5:] + boxes[:, 1:2] - 1
        boxes = _regress(boxes, reg)
        score = score[ok]
        for i in np.unique(ids):
            sel = np.flatnonzero(ids == i)
            for k in _nms_min(boxes[sel], score[sel], 0.7):
                j = sel[k]
                face = Face(boxes[j, :4].astype(np.float32), np.stack([px[j], py[j]], 1).astype(np.float32), float(score[j]))
                smallest = self.small_face_px if i in fine_set else self.min_face_px
                if face.prob >= min_prob and face.size >= smallest:
                    result[i].append(face)
        return result

    def detect(self, images: list[np.ndarray], fine: list | None = None, thresholds: tuple | None = None,
               min_prob: float | None = None) -> list[list[Face]]:
        """fine[i]: True: also look for faces down to small_face_px in image i; "probe": the same without
        the largest pyramid level (a third of the cost; faces from ~17 px up are found, enough to tell that
        a shot shows small faces); False / None: not. thresholds / min_prob override the detector's own for
        this call (query photos are read leniently)."""
        th = tuple(thresholds or self.thresholds)
        min_prob = self.min_prob if min_prob is None else min_prob
        if not images:
            return []
        fine = fine or [False] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        out: list[list[Face]] = [[] for _ in images]
        for idx in by_shape.values():
            sub_probe = [k for k, i in enumerate(idx) if isinstance(fine[i], str) and fine[i] == "probe"]
            sub_fine = [k for k, i in enumerate(idx) if not isinstance(fine[i], str) and fine[i]]
            for i, faces in zip(idx, self._detect_same_size([images[i] for i in idx], sub_fine, th, min_prob, sub_probe)):
                out[i] = faces
        return out
