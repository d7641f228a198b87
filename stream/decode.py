"""PyAV decoder that streams frames scaled to the analysis size, tolerating damage mid-stream."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from castfinder.core.errors import InputError

from .url_policy import UrlPolicy

log = logging.getLogger(__name__)

LIVE_PREFIXES = ("rtsp://", "rtmp://", "udp://", "tcp://", "srt://", "http://", "https://")
# an http(s) source, and what it leads to (HLS segments, keys): never file:, pipe:, udp:, concat: ...
HTTP_PROTOCOLS = "http,https,tcp,tls,crypto,httpproxy"
# under a URL policy FFmpeg opens nothing itself: every URL comes through the guard's io_open; a demuxer
# that would open inputs on its own (concat, an SDP's RTP) finds no protocol allowed. No persistent HTTP:
# FFmpeg's keep-alive reuses its own HTTP context, which a guarded input does not have.
GUARDED_OPTIONS = {"protocol_whitelist": "none", "http_persistent": "0"}


@dataclass
class SourceInfo:
    source: str
    is_live: bool
    duration_s: float | None   # None for live sources
    fps: float
    width: int                 # analysis size (after scaling)
    height: int
    src_width: int
    src_height: int


SMALL_WIDTH = 160  # shot detection works on this width: cuts do not need detail


class VideoFrame:
    """One decoded frame. `small` (BGR, for shot detection) is always made; the analysis-size
    RGB image only when a later stage asks for it, since most frames are never sampled."""

    __slots__ = ("index", "time_s", "small", "decoded_at", "_av", "_size", "_rgb", "_chip_size", "_chip_rgb")

    def __init__(self, index: int, time_s: float, small: np.ndarray, av_frame=None,
                 size: tuple[int, int] | None = None, rgb: np.ndarray | None = None,
                 chip_size: tuple[int, int] | None = None):
        self.index = index          # frame number in display order from the stream start
        self.time_s = time_s        # presentation time in seconds from the stream start
        self.small = small
        self.decoded_at = time.monotonic()  # for the freshness-lag metric (decode → searchable)
        self._av = av_frame
        self._size = size
        self._rgb = rgb
        self._chip_size = chip_size  # a larger picture to cut face chips from (None: the analysis image)
        self._chip_rgb = None

    @property
    def image(self) -> np.ndarray:
        """H x W x 3 uint8 RGB at analysis size (converted once, then the decoder frame is freed;
        the picture face chips are cut from is converted with it)."""
        if self._rgb is None:
            w, h = self._size
            self._rgb = self._av.to_ndarray(width=w, height=h, format="rgb24")
            if self._chip_size is not None:
                cw, ch = self._chip_size
                self._chip_rgb = self._av.to_ndarray(width=cw, height=ch, format="rgb24")
            self._av = None
        return self._rgb

    @property
    def chip_image(self) -> tuple[np.ndarray, float]:
        """(RGB picture to cut face chips from, its scale over the analysis image): the source's own
        pixels when it is larger than the analysis size, so a face 20 px wide there is embedded from
        the 40-60 px the film really has."""
        image = self.image
        if self._chip_rgb is None:
            return image, 1.0
        return self._chip_rgb, self._chip_rgb.shape[1] / image.shape[1]

    def release(self) -> None:
        """Drop the decoder frame of a frame that will not be sampled."""
        self._av = None


def small_bgr(frame: "av.VideoFrame", width: int, height: int) -> np.ndarray:
    """A small BGR copy for shot detection. For 4:2:0 video the planes are resized directly,
    which is several times cheaper than asking swscale for a scaled RGB frame."""
    if frame.format.name in ("yuv420p", "yuvj420p") and frame.width % 2 == 0 and frame.height % 2 == 0:
        import cv2
        # planes by offset, not by row: a chroma plane fills whole rows only when the height is a multiple of 4
        yuv = frame.to_ndarray().reshape(-1)
        H, W = frame.height, frame.width
        q = (H // 2) * (W // 2)
        y = yuv[:H * W].reshape(H, W)
        u = yuv[H * W:H * W + q].reshape(H // 2, W // 2)
        v = yuv[H * W + q:H * W + 2 * q].reshape(H // 2, W // 2)
        out = np.empty((height * 3 // 2, width), np.uint8)
        out[:height] = cv2.resize(y, (width, height), interpolation=cv2.INTER_AREA)
        out[height:height + height // 4] = cv2.resize(u, (width // 2, height // 2), interpolation=cv2.INTER_AREA).reshape(height // 4, width)
        out[height + height // 4:] = cv2.resize(v, (width // 2, height // 2), interpolation=cv2.INTER_AREA).reshape(height // 4, width)
        return cv2.cvtColor(out, cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(width=width, height=height, format="bgr24")


@dataclass
class DecodeStats:
    frames: int = 0
    last_time_s: float | None = None   # time of the last frame decoded (a file that ends early stops short)
    damaged_packets: int = 0
    damaged_spans: list[tuple[float, float]] = field(default_factory=list)


def is_live_source(source: str) -> bool:
    if source == "-":
        return True
    if source.startswith(("http://", "https://")):
        # a plain file over HTTP has a duration; HLS playlists and streams do not: decided on open
        return True
    return source.startswith(LIVE_PREFIXES)


def _check_local_path(source: str) -> None:
    path = Path(source)
    if not path.exists():
        raise InputError(f"{source}: no such file")
    if path.is_dir():
        raise InputError(f"{source}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise InputError(f"{source}: file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(f"{source}: permission denied")


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


class VideoDecoder:
    """Opens a source and yields VideoFrame objects; `stop()` ends the stream from another thread."""

    def __init__(self, source: str, analysis_width: int = 640, open_timeout_s: float = 10.0,
                 max_height: int | None = None, gpu: bool = True, url_policy: UrlPolicy | None = None,
                 chip_width: int = 0):
        """gpu: decode on a CUDA GPU when there is one (stream/gpu_decode.py); False: on the CPU.
        chip_width: a sampled frame also keeps a picture up to this wide (at most the source's own
        size) to cut face chips from, when the source is at least 1.25x the analysis size (0: never).
        url_policy: a URL source, and every URL it leads to, must be under its prefixes
        (SourceForbiddenError otherwise, before anything outside is asked for)."""
        self.source = source
        self.on_gpu = False
        self.stats = DecodeStats()
        self._stop = threading.Event()
        self._policy, self._guard = url_policy, None
        live = is_live_source(source)
        if not live:
            _check_local_path(source)
        elif url_policy is not None and source != "-":
            url_policy.check(source)
        target = "pipe:0" if source == "-" else source
        options, extra = {}, {}
        if live and source != "-":
            # network sources: fail fast instead of hanging on an unreachable host
            options = {"rw_timeout": str(int(open_timeout_s * 1e6)), "timeout": str(int(open_timeout_s * 1e6))}
        if source.startswith(("http://", "https://")):
            if url_policy is not None:  # redirects and playlists can lead anywhere: read through the guard
                from .guarded_http import GuardedOpener
                self._guard = GuardedOpener(url_policy, open_timeout_s)
                options.update(GUARDED_OPTIONS)
                extra["io_open"] = self._guard
            else:
                options["protocol_whitelist"] = HTTP_PROTOCOLS
        t_open = time.monotonic()
        try:
            if source == "-":
                import sys
                self.container = av.open(sys.stdin.buffer, mode="r")
            else:
                timeout = open_timeout_s if live else None
                self.container = self._open_on_gpu(target, options, timeout, **extra) if gpu else None
                self._check_guard()
                if self.container is None:
                    self.container = av.open(target, mode="r", options=options, timeout=timeout, **extra)
            self._check_guard()
        except (av.error.FFmpegError, OSError) as exc:
            self._check_guard()
            # a server that accepts and never answers ends in whatever error the protocol gives up with
            # ("no container found" for RTSP): past the timeout, that is what it was
            if live and source != "-" and (isinstance(exc, av.error.ExitError)
                                          or time.monotonic() - t_open >= 0.9 * open_timeout_s):
                raise InputError(f"{source}: timed out after {open_timeout_s:g} s (the server accepted the "
                                 f"connection but sent no video)") from None
            if isinstance(exc, av.error.FileNotFoundError):
                raise InputError(f"{source}: no such file or unreachable address") from None
            if isinstance(exc, av.error.InvalidDataError):
                raise InputError(f"{source}: not a video file, or damaged beyond reading (no container found)") from None
            raise InputError(f"{source}: cannot open ({_reason(exc)})") from None  # refused, HTTP errors
        if not self.container.streams.video:
            kinds = sorted({s.type for s in self.container.streams})  # before closing: closed, it lists none
            self.container.close()
            what = ("no streams at all" if not kinds else "audio only" if kinds == ["audio"]
                    else f"only {', '.join(kinds)}")
            raise InputError(f"{source}: no video stream ({what})")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"   # frame + slice threading in the codec
        ctx = self.stream.codec_context
        if not ctx.width or not ctx.height:
            self.container.close()
            raise InputError(f"{source}: video stream has no picture size (damaged header)")
        fps = float(self.stream.average_rate or self.stream.guessed_rate or 25.0)
        duration = None
        if self.stream.duration and self.stream.time_base:
            duration = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration:
            duration = self.container.duration / 1e6
        self.is_live = live and not (duration and source.startswith(("http://", "https://")) and not source.endswith(".m3u8"))
        if source.startswith(("rtsp://", "udp://", "rtmp://", "srt://", "tcp://")) or source == "-":
            self.is_live = True
        # bounded in both directions: a 100x10000 video must not make 10000-row frames
        scale = min(1.0, analysis_width / ctx.width, (max_height or ctx.height) / ctx.height)
        self.width, self.height = _even(ctx.width * scale), _even(ctx.height * scale)
        self.info = SourceInfo(source, self.is_live, None if self.is_live else duration, fps,
                               self.width, self.height, ctx.width, ctx.height)
        self.chip_size = None
        # the analysis picture enlarged by up to chip_width / analysis_width, never past the source's size
        k = min(chip_width / analysis_width, ctx.width / self.width, ctx.height / self.height) if chip_width else 0.0
        if k >= 1.25:
            self.chip_size = (_even(self.width * k), _even(self.height * k))
        self._start_pts = self.stream.start_time or 0
        # small frame: SMALL_WIDTH wide, height a multiple of 4 (I420 layout needs it)
        # (at most 4x as high as wide: cuts do not need a tall picture, and memory stays bounded)
        self.small_size = (SMALL_WIDTH, min(4 * SMALL_WIDTH, max(4, int(round(SMALL_WIDTH * ctx.height / ctx.width / 4)) * 4)))

    def _check_guard(self) -> None:
        """A URL the guard refused, even one FFmpeg only logged and skipped (an HLS segment): the
        source is refused. Ctrl-C while the guard read for FFmpeg (PyAV drops what io_open raises) is raised here."""
        if self._guard is not None and self._guard.interrupted:
            if getattr(self, "container", None) is not None:
                self.close()
            raise KeyboardInterrupt
        if self._guard is not None and self._guard.refused:
            if getattr(self, "container", None) is not None:
                self.close()
            raise self._policy.refusal()

    def _open_on_gpu(self, target: str, options: dict, timeout, **extra):
        """The container opened for NVDEC decoding, or None (no GPU, or it failed: the caller opens it
        for the CPU, which also gives the usual error for a bad source)."""
        from .gpu_decode import cuda_hwaccel
        hw = cuda_hwaccel()
        if hw is None:
            return None
        try:
            container = av.open(target, mode="r", options=options, timeout=timeout, hwaccel=hw, **extra)
        except (av.error.FFmpegError, OSError) as exc:
            log.info("%s: not decoding on the GPU (%s); decoding on the CPU", self.source, _reason(exc))
            return None
        self.on_gpu = True
        return container

    def stop(self) -> None:
        self._stop.set()
        if self._guard is not None:
            self._guard.abort()  # a read waiting on a silent server returns now

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing a broken stream must not hide the real error
            pass

    def _time_of(self, frame: av.VideoFrame, fallback: float) -> float:
        if frame.pts is None or frame.time_base is None:
            return fallback
        return float((frame.pts - self._start_pts) * frame.time_base)

    def frames(self, start_s: float = 0.0) -> Iterator[VideoFrame]:
        """Yield frames in display order from `start_s` (a resumed ingest seeks there)."""
        index = 0
        fps = self.info.fps
        if start_s > 0:
            # seek to the keyframe before start_s, then drop frames until start_s
            self.container.seek(int(start_s / float(self.stream.time_base)) + self._start_pts,
                                stream=self.stream, backward=True, any_frame=False)
            index = -1  # recomputed from the first frame's time
        last_time = -1.0
        bad_since: float | None = None
        packets = self.container.demux(self.stream)
        while not self._stop.is_set():
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.EOFError:
                break
            except (av.error.InvalidDataError, av.error.FFmpegError, OSError) as exc:
                # the container itself is broken here (or the network, read through the URL guard): PyAV
                # cannot resync the demuxer, so stop cleanly
                log.warning("%s: stream unreadable after %.2f s (%s); stopping there", self.source, max(last_time, 0), _reason(exc))
                self.stats.damaged_packets += 1
                self.stats.damaged_spans.append((max(last_time, 0.0), float("inf")))
                break
            if self._guard is not None and self._guard.refused:  # a reloaded playlist or a segment led outside
                raise self._policy.refusal()
            try:
                decoded = packet.decode()
            except (av.error.InvalidDataError, av.error.FFmpegError) as exc:
                self.stats.damaged_packets += 1
                if bad_since is None:
                    bad_since = max(last_time, 0.0)
                log.debug("damaged packet near %.2f s: %s", last_time, _reason(exc))
                continue
            for frame in decoded:
                t = self._time_of(frame, last_time + 1.0 / fps)
                if t < start_s - 1e-6:
                    continue
                if index < 0:
                    index = int(round(t * fps))
                if bad_since is not None:
                    self.stats.damaged_spans.append((bad_since, t))
                    log.warning("%s: skipped damaged data between %.2f s and %.2f s", self.source, bad_since, t)
                    bad_since = None
                small = small_bgr(frame, *self.small_size)
                last_time = t
                self.stats.frames += 1
                self.stats.last_time_s = t
                yield VideoFrame(index, t, small, frame, (self.width, self.height), chip_size=self.chip_size)
                index += 1
        if self._guard is not None and self._guard.refused:
            raise self._policy.refusal()
        if bad_since is not None:
            self.stats.damaged_spans.append((bad_since, max(last_time, bad_since)))
            log.warning("%s: stream ends in damaged data after %.2f s", self.source, bad_since)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split("\n")[0][:200]
