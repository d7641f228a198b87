"""Pick CUDA when present, CPU otherwise, and keep CPU thread counts sane on small machines."""

from __future__ import annotations

import os

import torch

_configured = False


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from castfinder.core.errors import InputError
        raise InputError("device 'cuda' asked for, but no CUDA GPU is available")
    return torch.device(name)


def configure_cpu_threads() -> None:
    """Stages run in parallel threads, so each op gets a share of the cores, not all of them:
    oversubscribing 2 cores with 2 x N intra-op threads made every stage slower."""
    global _configured
    if _configured:
        return
    cores = os.cpu_count() or 1
    threads = int(os.environ.get("CASTFINDER_TORCH_THREADS", max(1, cores // 2) if cores <= 4 else cores - 2))
    torch.set_num_threads(threads)
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass
    _configured = True
