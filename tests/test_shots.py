"""Shot boundaries against the hand-labelled cuts in truth.json (a cut within 2 frames counts)."""

import pytest

from index.evaluation import cut_precision_recall
from stream.decode import VideoDecoder
from stream.shots import ShotClosed, ShotSegmenter

from conftest import CLIPS, clip, truth

# floors measured with the default settings (ContentDetector, threshold 20); see the issue note
FLOORS = {"friends": (1.0, 1.0), "avenger2": (1.0, 1.0), "herapheri": (1.0, 1.0),
          "billhyland": (1.0, 1.0), "testvideo": (0.8, 0.9)}


def detect_cuts(name: str, threshold: float = 20.0) -> list[int]:
    dec = VideoDecoder(str(clip(name)))
    seg = ShotSegmenter(dec.info.fps, "content", threshold, 0.5)
    shots = []
    for frame in dec.frames():
        frame.release()
        shots += [e.shot for e in seg.push(frame) if isinstance(e, ShotClosed)]
    shots += [e.shot for e in seg.flush() if isinstance(e, ShotClosed)]
    # shots tile the video with no gaps
    for a, b in zip(shots, shots[1:]):
        assert a.end_frame == b.start_frame and a.index + 1 == b.index
    assert shots[0].start_frame == 0
    return [s.start_frame for s in shots[1:]]


precision_recall = cut_precision_recall


@pytest.mark.parametrize("name", CLIPS)
def test_cuts_match_truth(name):
    true_cuts = [s["start_frame"] for s in truth(name)["shots"]][1:]
    p, r = precision_recall(detect_cuts(name), true_cuts)
    print(f"{name}: cut precision {p:.3f} recall {r:.3f}")
    min_p, min_r = FLOORS[name]
    assert p >= min_p and r >= min_r


def test_precision_recall_helper():
    assert precision_recall([10, 50], [11, 80]) == (0.5, 0.5)
    assert precision_recall([], []) == (1.0, 1.0)
