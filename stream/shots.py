"""Shot boundaries on the fly: PySceneDetect detectors fed frame by frame.

Detectors report a cut a few frames after it happens (flash filter, adaptive window), so frames
wait in a short buffer until no later cut can move them into another shot."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Union

from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

from castfinder.errors import InputError

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


def make_detector(kind: str, fps: float, threshold: float, min_len_s: float):
    min_len = max(1, int(round(min_len_s * fps)))
    if kind == "content":
        return ContentDetector(threshold=threshold, min_scene_len=min_len), min_len + 2
    if kind == "adaptive":
        return AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_len, window_width=2), min_len + 6
    raise InputError(f"unknown shot detector '{kind}' (known: content, adaptive)")


class ShotSegmenter:
    """Assigns each frame to a shot and emits ShotClosed when the next cut (or the end) arrives."""

    def __init__(self, fps: float, kind: str = "content", threshold: float = 27.0,
                 min_len_s: float = 0.5, first_shot: int = 0):
        self.fps = fps
        self.detector, self.lag = make_detector(kind, fps, threshold, min_len_s)
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
            self.pending_cuts.append(int(cut.frame_num))
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
                    self.pending_cuts.append(int(cut.frame_num))
            except Exception:  # post_process is optional polish; a failure must not lose frames
                pass
        events: list[ShotEvent] = []
        while self.buffer:
            events.extend(self._release(self.buffer.popleft()))
        if self.last is not None and self.shot_start is not None:
            events.append(ShotClosed(self._close(self.last.index + 1, self.last.time_s + 1.0 / self.fps)))
            self.shot_start = None
        return events
