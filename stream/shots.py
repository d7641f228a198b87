"""Shot boundaries on the fly: PySceneDetect detectors, or castfinder's own cut detector
(stream/cut_detect.py: hard cuts, flashes, cross-fades, dips; kind "hybrid"), fed frame by frame.

Detectors report a cut a few frames after it happens (flash filter, adaptive window, fade
look-ahead), so frames wait in a short buffer until no later cut can move them into another shot."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Union

from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

from castfinder.core.errors import InputError

from .cut_detect import CutDetector, CutParams
from .decode import VideoFrame


@dataclass
class Shot:
    index: int
    start_frame: int
    end_frame: int      # exclusive
    start_s: float
    end_s: float


@dataclass
class FrameInShot:
    shot: int
    frame: VideoFrame


@dataclass
class ShotClosed:
    shot: Shot


ShotEvent = Union[FrameInShot, ShotClosed]


class _HybridDetector:
    """CutDetector behind PySceneDetect's process_frame/post_process calls (cuts as frame numbers)."""

    def __init__(self, fps: float, params: CutParams):
        self.cuts = CutDetector(fps, params)
        self.first: int | None = None   # the stream's first frame number (a resumed ingest starts later)

    def process_frame(self, timecode: FrameTimecode, image) -> list[int]:
        if self.first is None:
            self.first = int(timecode.frame_num)
        return [self.first + c for c in self.cuts.push(image)]

    def post_process(self, timecode: FrameTimecode) -> list[int]:
        return [self.first + c for c in self.cuts.flush()] if self.first is not None else []


def make_detector(kind: str, fps: float, threshold: float, min_len_s: float, params: CutParams | None = None):
    min_len = max(1, int(round(min_len_s * fps)))
    if kind == "content":
        return ContentDetector(threshold=threshold, min_scene_len=min_len), min_len + 2
    if kind == "adaptive":
        return AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_len, window_width=2), min_len + 6
    if kind == "hybrid":
        # threshold on the content detector's scale, so a preset can switch kinds: 20 keeps
        # CutParams' own thresholds, lower finds more cuts
        base = params or CutParams()
        scale = threshold / 20.0
        params = replace(base, min_len_s=min_len_s, hard_min=base.hard_min * scale, fade_min=base.fade_min * scale)
        det = _HybridDetector(fps, params)
        return det, det.cuts.lag + 1
    raise InputError(f"unknown shot detector '{kind}' (known: content, adaptive, hybrid)")


class ShotSegmenter:
    """Assigns each frame to a shot and emits ShotClosed when the next cut (or the end) arrives."""

    def __init__(self, fps: float, kind: str = "content", threshold: float = 27.0,
                 min_len_s: float = 0.5, first_shot: int = 0, cut_params: CutParams | None = None):
        self.fps = fps = float(fps)   # FrameTimecode refuses an int rate
        self.detector, self.lag = make_detector(kind, fps, threshold, min_len_s, cut_params)
        self.buffer: deque[VideoFrame] = deque()
        self.pending_cuts: deque[int] = deque()
        self.shot_index = first_shot
        self.shot_start: VideoFrame | None = None
        self.last: VideoFrame | None = None
        self.cuts_found = 0

    def _timecode(self, frame: VideoFrame) -> FrameTimecode:
        return FrameTimecode(frame.index, self.fps)

    def push(self, frame: VideoFrame) -> list[ShotEvent]:
        cuts = self.detector.process_frame(self._timecode(frame), frame.small)
        for cut in cuts or ():
            self.pending_cuts.append(int(getattr(cut, "frame_num", cut)))
        self.buffer.append(frame)
        events: list[ShotEvent] = []
        while len(self.buffer) > self.lag:
            events.extend(self._release(self.buffer.popleft()))
        return events

    def _release(self, frame: VideoFrame) -> list[ShotEvent]:
        events: list[ShotEvent] = []
        if self.shot_start is None:
            self.shot_start = frame
        # a cut at or before this frame starts a new shot here (never an empty one)
        cut_here = False
        while self.pending_cuts and self.pending_cuts[0] <= frame.index:
            self.pending_cuts.popleft()
            cut_here = True
        if cut_here and frame is not self.shot_start:
            events.append(ShotClosed(self._close(frame.index, frame.time_s)))
            self.shot_start = frame
            self.cuts_found += 1
        events.append(FrameInShot(self.shot_index, frame))
        self.last = frame
        return events

    def _close(self, end_frame: int, end_s: float) -> Shot:
        start = self.shot_start
        shot = Shot(self.shot_index, start.index, end_frame, start.time_s, end_s)
        self.shot_index += 1
        return shot

    def flush(self) -> list[ShotEvent]:
        """End of stream (or a stop): release the buffer and close the open shot."""
        if self.buffer:
            try:
                for cut in self.detector.post_process(self._timecode(self.buffer[-1])) or ():
                    self.pending_cuts.append(int(getattr(cut, "frame_num", cut)))
            except Exception:  # post_process is optional polish; a failure must not lose frames
                pass
        events: list[ShotEvent] = []
        while self.buffer:
            events.extend(self._release(self.buffer.popleft()))
        if self.last is not None and self.shot_start is not None:
            events.append(ShotClosed(self._close(self.last.index + 1, self.last.time_s + 1.0 / self.fps)))
            self.shot_start = None
        return events
