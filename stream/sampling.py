"""Keep N frames per second inside each shot, and always at least one frame of a shot."""

from __future__ import annotations


class ShotSampler:
    def __init__(self, fps: float):
        if fps <= 0:
            raise ValueError("sample fps must be positive")
        self.period = 1.0 / fps
        self.shot = None
        self.next_time = 0.0

    def keep(self, shot: int, time_s: float) -> bool:
        if shot != self.shot:               # first frame of a shot is always kept
            self.shot = shot
            self.next_time = time_s + self.period
            return True
        if time_s + 1e-6 >= self.next_time:
            # advance on the grid so a long gap (dropped frames) does not cause a burst
            while self.next_time <= time_s + 1e-6:
                self.next_time += self.period
            return True
        return False
