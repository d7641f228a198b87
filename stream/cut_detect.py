"""Online shot-cut detector for hard cuts, flashes, cross-fades and dips through black or white.

Each frame is reduced to a 48-px-wide float thumbnail (and a 16-px one). Three rules read them:

* hard cut at frame i: the structural jump from i-1 to i (grey picture scaled to unit contrast, so
  brightness changes, fades and lightning hardly move it) is the peak of its neighbourhood and
  stands out from the motion around it, completes at once (a cross-fade's first steps keep
  drifting away from the frame before), and the picture does not come back within a flash's
  length (a white or black flash, a camera flash returns to the shot it interrupted; a flash that
  leads into a different shot is a cut, placed at the flash);
* cross-fade centred near c: of the windows [c-w, c+w] around it, the one whose end frames differ
  most shows two different pictures, and every frame inside it is a mix  a*A + b*B + k  of its
  ends up to a small residual. The cut goes at the first frame nearer B than A: a cross-fade's
  middle frame. Two window sizes run; when both see a transition, its cut is their mean;
* dip: a run of black or white frames (or a title on black) between two different pictures is a
  cut at the run's last darkest (whitest) frame, or just after a lone one. A fade *to* black is
  not a cut by itself (the black tail belongs to the shot that faded out); a hard cut *into* the
  black marks the boundary instead of the black's end; the same picture after the black is a blink.

Candidates closer than the minimum shot length keep one (dip > hard > cross-fade).
Decisions need a bounded look-ahead (`lag` frames, ~0.9 s), so it runs on a live stream; about
0.1-0.3 ms a frame on 160-px frames (two resizes and a few small vector ops; the least-squares
test only runs on the rare windows that peak). Thresholds are in units that do not depend on the
clip: mean abs BGR levels (0-255) and the unit-contrast distance of _zdist.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class CutParams:
    thumb_width: int = 48
    coarse_width: int = 16          # thumbnail for the mix test (less sensitive to motion)
    std_floor: float = 8.0          # grey contrast below this is noise, not picture (see _Frame.z)
    # hard cuts
    hard_min: float = 0.3           # structural jump (_zdist; a cut gives 0.4-1.4, another picture ~1.1)
    hard_min_abs: float = 3.0       # and mean abs BGR change (0-255): below it, noise
    hard_ratio: float = 2.5         # jump / median jump of the frames around it
    activity_s: float = 0.2         # those frames: this long on each side
    complete_frac: float = 0.6      # jump / largest distance from i-1 to i+1, i+2
    flash_s: float = 0.3            # longest flash: the picture comes back within this
    flash_return: float = 0.45      # "comes back": distance to the pre-flash frame / jump
    # cross-fades
    fade_w_s: tuple = (0.2, 0.32)   # half windows: fades up to 0.64 s are seen whole (longer
                                    # ones are placed between the two windows' estimates)
    fade_min: float = 12.0          # mean abs BGR distance (0-255) between a window's ends
    fade_zmin: float = 0.5          # and their structural distance: two pictures, not one relit
    fade_resid: float = 0.18        # mean mix residual of the frames inside / distance of the ends
    fade_resid_max: float = 0.45    # worst frame's
    # dips
    uniform_spread: float = 8.0     # grey 5-95 percentile spread (0-255) of a black or white frame
    dip_zdist: float = 0.5          # structural distance of the pictures either side of a dip
    # shots
    min_len_s: float = 0.3


_GREY = np.array([0.114, 0.587, 0.299], np.float32)   # BGR weights
_RANK = {"fade": 0, "hard": 1, "dip": 2}               # which of two close candidates stays


class _Frame:
    __slots__ = ("thumb", "coarse", "z", "spread", "level", "d1", "z1")

    def __init__(self, thumb: np.ndarray, coarse: np.ndarray, std_floor: float):
        self.thumb = thumb
        self.coarse = coarse
        grey = (thumb @ _GREY).ravel()
        lo, hi = len(grey) // 20, len(grey) - 1 - len(grey) // 20
        q = np.partition(grey, (lo, hi))
        self.spread = float(q[hi] - q[lo])           # ~0 for black, white, or a small title on black
        mean = float(grey.mean())
        self.level = min(mean, 255.0 - mean)         # how far from black or white
        # grey picture at unit contrast: a cut changes it, brightness and fades hardly do
        self.z = (grey - mean) / max(float(grey.std()), std_floor)
        self.d1 = 0.0                                # mean abs BGR change from the frame before
        self.z1 = 0.0                                # structural change from the frame before


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _zdist(a: _Frame, b: _Frame) -> float:
    """Mean abs difference of the unit-contrast grey pictures: ~0 for one picture at another
    brightness or contrast, ~1.1 for two unrelated pictures."""
    return float(np.abs(a.z - b.z).mean())


class CutDetector:
    """push(small_bgr) -> numbers (from 0) of the frames that start a shot, as they become final;
    flush() at the end of the stream. A cut is reported at most `lag` frames after its frame."""

    def __init__(self, fps: float, params: CutParams | None = None):
        p = self.p = params or CutParams()
        fps = fps if fps and fps > 0 else 25.0
        self.k = max(2, int(round(p.activity_s * fps)))
        self.m = max(2, int(round(p.flash_s * fps)))
        self.ws = sorted({max(3, int(round(s * fps))) for s in p.fade_w_s})
        self.min_len = max(1, int(round(p.min_len_s * fps)))
        self.hard_delay = max(self.k, self.m)        # hard cut at i decided when i + hard_delay arrives
        wmax = self.ws[-1]
        # a cross-fade centred at c is decided at c + w + w//2 and may land at c - w; a dip is
        # decided hard_delay after its start; a cut is final once no later decision lands before it
        self.lag = max(self.hard_delay, 2 * wmax + wmax // 2) + 2
        self.hist: deque[_Frame] = deque(maxlen=self.lag + 2 * wmax + self.m + self.k + 4)
        self.n = 0                                   # frames pushed
        self.fade_d: dict[tuple[int, int], float] = {}   # (w, centre) -> distance of the window's ends
        self.pending: list[tuple[int, tuple]] = []   # (frame, rank) of candidates not yet final
        self.last_cut = 0
        self.size: tuple[int, int] | None = None
        self.coarse_size: tuple[int, int] | None = None
        self.run_start: int | None = None            # current black/white run
        self.run_end = -1
        self.run_pre: _Frame | None = None           # the picture before it
        self.lead_end: int | None = None             # the stream's opening black ends here
        self.trace: list | None = None               # set to [] to collect (frame, strength, rule)

    def _frame(self, i: int) -> _Frame:
        return self.hist[i - (self.n - len(self.hist))]

    def push(self, small: np.ndarray) -> list[int]:
        if self.size is None:
            h, w = small.shape[:2]
            tw = min(self.p.thumb_width, w)
            self.size = (tw, max(2, int(round(tw * h / w))))
            cw = min(self.p.coarse_width, tw)
            self.coarse_size = (cw, max(2, int(round(cw * h / w))))
        thumb = cv2.resize(small, self.size, interpolation=cv2.INTER_AREA).astype(np.float32)
        f = _Frame(thumb, cv2.resize(thumb, self.coarse_size, interpolation=cv2.INTER_AREA), self.p.std_floor)
        if self.hist:
            f.d1 = _dist(thumb, self.hist[-1].thumb)
            f.z1 = _zdist(f, self.hist[-1])
        self.hist.append(f)
        self.n += 1
        newest = self.n - 1
        uniform = f.spread <= self.p.uniform_spread
        if not uniform and self.lead_end is None:
            self.lead_end = newest
        if uniform:
            if self.run_start is None:
                self.run_start = newest
                # the picture before the run, a little before any fade-out into it
                self.run_pre = self._frame(max(self.n - len(self.hist), newest - 1 - self.ws[0] // 2))
            self.run_end = newest
        elif self.run_start is not None and newest >= max(self.run_end + 1 + self.ws[0] // 2,
                                                          self.run_start + self.hard_delay):
            # judged once the picture after it has settled and a hard cut into it is decided
            self._dip(self.run_start, self.run_end, newest)
            self.run_start = None
        self._decide(newest)
        return self._release(newest - self.lag)

    def flush(self) -> list[int]:
        """End of stream: decide the last frames with whatever look-ahead is left."""
        last = self.n - 1
        if self.run_start is not None and self.run_end < last:
            self._dip(self.run_start, self.run_end, last)
            self.run_start = None
        for i in range(max(1, last - self.hard_delay + 1), last + 1):
            self._hard(i, last)
        for w in self.ws:
            for c in range(max(w, last - w - w // 2 + 1), last - w + 1):
                self._fade(c, w)
        return self._release(last + 1)

    # ---- decisions ---------------------------------------------------------------------------
    def _decide(self, newest: int) -> None:
        if newest - self.hard_delay >= 1:
            self._hard(newest - self.hard_delay, newest)
        for w in self.ws:
            c = newest - w
            if c >= w:
                self.fade_d[w, c] = _dist(self._frame(c - w).thumb, self._frame(c + w).thumb)
                self.fade_d.pop((w, c - 2 * w), None)
            c = newest - w - w // 2
            if c >= w:
                self._fade(c, w)

    def _hard(self, i: int, newest: int) -> None:
        p = self.p
        f = self._frame(i)
        if f.z1 < p.hard_min or f.d1 < p.hard_min_abs or i <= (self.lead_end or 0) or i > newest - 2:
            return                                   # (out of the opening black; unverifiable at the end)
        around = [self._frame(j).z1 for j in range(max(1, i - self.k), min(newest, i + self.k) + 1) if j != i]
        if around and f.z1 < max(around):
            return                                   # only the peak of a burst of change
        if f.z1 < p.hard_ratio * sorted(around)[len(around) // 2]:
            return                                   # fast motion: everything around changes as much
        prev = self._frame(i - 1)
        further = [_zdist(prev, self._frame(j)) for j in range(i + 1, min(newest, i + 2) + 1)]
        if f.z1 < p.complete_frac * max(further):
            return                                   # still drifting away: a gradual transition
        for j in range(i + 1, min(newest, i + self.m) + 1):
            if _zdist(prev, self._frame(j)) <= p.flash_return * f.z1:
                return                               # a flash: the picture comes back
        for j in range(max(self.n - len(self.hist), i - 1 - self.m), i - 1):
            if _zdist(self._frame(j), f) <= p.flash_return * f.z1:
                return                               # the end of a flash: back to the picture before it
        self._candidate(i, f.z1, "hard")

    def _fade(self, c: int, w: int) -> None:
        p = self.p
        d = self.fade_d.get((w, c))
        if d is None or d < p.fade_min:
            return
        for j in range(c - w // 2, c + w // 2 + 1):  # the window best centred on the change
            dj = self.fade_d.get((w, j))
            if dj is not None and (dj > d or (dj == d and j < c)):
                return
        a, b = self._frame(c - w), self._frame(c + w)
        if _zdist(a, b) < p.fade_zmin:
            return                                   # one picture, moved or relit
        frames = [self._frame(t) for t in range(c - w + 1, c + w)]
        if any(fr.spread <= p.uniform_spread for fr in (a, b, *frames)):
            return                                   # through black or white: the dip rule's
        # every frame between is a mix of the ends (on the coarse thumbnail, where the motion that
        # goes on during a fade matters less); least squares by the 3x3 normal equations, since
        # LAPACK's lstsq costs ~10 ms a call here
        A, B = a.coarse.ravel(), b.coarse.ravel()
        basis = np.stack([A, B, np.ones_like(A)], axis=1).astype(np.float64)
        Y = np.stack([fr.coarse.ravel() for fr in frames], axis=1)
        coef = np.linalg.solve(basis.T @ basis + np.eye(3) * 1e-3, basis.T @ Y)
        resid = np.abs(Y - basis @ coef).mean(axis=0) / max(_dist(A, B), 1e-3)
        if resid.mean() > p.fade_resid or resid.max() > p.fade_resid_max:
            return
        cut = c + w
        for t, fr in enumerate(frames, c - w + 1):
            if _dist(fr.thumb, b.thumb) < _dist(fr.thumb, a.thumb):
                cut = t
                break
        self._candidate(cut, d, "fade")

    def _dip(self, s: int, e: int, newest: int) -> None:
        """A black/white run [s, e] is a cut when the pictures either side of it differ."""
        if s == 0 or self.run_pre is None:
            return                                   # the stream starts black: nothing to cut from
        post = self._frame(min(newest, e + 1 + self.ws[0] // 2))
        if _zdist(self.run_pre, post) < self.p.dip_zdist:
            return                                   # the same picture comes back: a blink
        if any(r[2] == "hard" and s - 1 <= f <= s + 1 for f, r in self.pending):
            return                                   # a hard cut into the black marks the boundary
        # the last darkest (whitest) frame among the run's last few: a long black belongs to the
        # shot that faded out into it; after a lone frame
        s = max(s, e - self.ws[0])
        levels = [self._frame(t).level for t in range(s, e + 1)]
        cut = s + max(k for k, v in enumerate(levels) if v <= min(levels) + 0.5)
        self._candidate(cut + 1 if cut == e and e == s else cut, _zdist(self.run_pre, post), "dip")

    def _candidate(self, frame: int, strength: float, why: str) -> None:
        if self.trace is not None:
            self.trace.append((frame, round(strength, 2), why))
        rank = (_RANK[why], strength, why)
        for k, (f, r) in enumerate(self.pending):
            if abs(f - frame) >= self.min_len:
                continue
            if why == "fade" and r[2] == "fade":
                # both window sizes saw this transition, each placing it from its own ends: a
                # long fade's middle lies between the two
                self.pending[k] = ((f + frame + 1) // 2, max(r, rank))
            elif rank > r:
                self.pending[k] = (frame, rank)
            self.pending.sort()
            return
        self.pending.append((frame, rank))
        self.pending.sort()

    def _release(self, upto: int) -> list[int]:
        out = []
        while self.pending and self.pending[0][0] <= upto:
            f, _ = self.pending.pop(0)
            if f - self.last_cut >= self.min_len:
                out.append(f)
                self.last_cut = f
        return out
