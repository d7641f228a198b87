"""Decode on the GPU (NVDEC, through the FFmpeg inside PyAV) when this process has a CUDA GPU; the
CPU otherwise. Chosen per source when it is opened: VideoDecoder asks cuda_hwaccel() for settings,
and opens the source without them if they fail (no GPU after all, a codec NVDEC does not take), so a
source always opens where the CPU could open it. Frames come back to host memory (PyAV downloads
them, in NV12), so resize, sampling, dedup and the detector's input stay the CPU path's; what moves
to the GPU is the decoding itself. CASTFINDER_GPU_DECODE=0 keeps decoding on the CPU. Not exercised
on CI (no GPU there): there, cuda_hwaccel() is None."""

from __future__ import annotations

import os


def cuda_present() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # no torch, or a broken CUDA install: decode on the CPU
        return False


def cuda_hwaccel(device: int | None = None):
    """PyAV's settings for decoding on CUDA GPU `device` (default: the first), or None: no GPU, a
    PyAV without hardware decoding (before 14) or whose FFmpeg lacks CUDA, or CASTFINDER_GPU_DECODE=0."""
    if os.environ.get("CASTFINDER_GPU_DECODE", "1") in ("0", "off", "false") or not cuda_present():
        return None
    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available
    except ImportError:
        return None
    if "cuda" not in hwdevices_available():
        return None
    # a stream NVDEC cannot decode (a codec or profile it lacks) falls back to FFmpeg's CPU decoder
    return HWAccel("cuda", device=None if device is None else str(device), allow_software_fallback=True)
