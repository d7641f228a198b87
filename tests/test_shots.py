"""Shot boundaries against the hand-labelled cuts in truth.json (a cut within 2 frames counts), and
the hybrid detector on transitions built from real footage: a cross-fade, a dip through black, white
and black flashes, a 0.4 s shot."""

import json

import av
import numpy as np
import pytest

from castfinder.index.evaluation import cut_precision_recall
from castfinder.stream.decode import VideoDecoder, VideoFrame
from castfinder.stream.shots import ShotClosed, ShotSegmenter

from conftest import CLIPS, DATA, clip, truth

# floors measured with the content detector (threshold 20, 0.5 s); see the issue note
FLOORS = {"friends": (1.0, 1.0), "avenger2": (1.0, 1.0), "herapheri": (1.0, 1.0),
          "billhyland": (1.0, 1.0), "testvideo": (0.8, 0.9)}
# the hybrid detector (threshold 20, 0.3 s), measured: dev 1.0 but testvideo P 0.957 (a pinball
# machine's lights); devhard lowres/wide 0.971/1.0, crushed 1.0/1.0, supernatural 1.0/1.0,
# strangerthings 0.90/0.978 (benchmarks/shot_eval.py)
HYBRID_FLOORS = {"friends": (1.0, 1.0), "avenger2": (1.0, 1.0), "herapheri": (1.0, 1.0),
                 "billhyland": (1.0, 1.0), "testvideo": (0.9, 0.95)}
DEVHARD_FLOORS = {"lowres": (0.93, 0.97), "wide": (0.93, 0.97), "crushed": (0.93, 0.97),
                  "supernatural": (0.95, 0.97), "strangerthings": (0.85, 0.93)}
HYBRID = ("hybrid", 20.0, 0.3)


def segment(path, kind="content", threshold=20.0, min_len_s=0.5):
    """Shots found in a video, checked to tile it; returns (cut frames, number of frames)."""
    dec = VideoDecoder(str(path))
    seg = ShotSegmenter(dec.info.fps, kind, threshold, min_len_s)
    shots, n = [], 0
    for frame in dec.frames():
        frame.release()
        n += 1
        shots += [e.shot for e in seg.push(frame) if isinstance(e, ShotClosed)]
    shots += [e.shot for e in seg.flush() if isinstance(e, ShotClosed)]
    # shots tile the video with no gaps
    for a, b in zip(shots, shots[1:]):
        assert a.end_frame == b.start_frame and a.index + 1 == b.index
    assert shots[0].start_frame == 0 and shots[-1].end_frame == n
    return [s.start_frame for s in shots[1:]], n


def detect_cuts(name: str, threshold: float = 20.0) -> list[int]:
    return segment(clip(name), "content", threshold, 0.5)[0]


precision_recall = cut_precision_recall


@pytest.mark.parametrize("name", CLIPS)
def test_cuts_match_truth(name):
    true_cuts = [s["start_frame"] for s in truth(name)["shots"]][1:]
    p, r = precision_recall(detect_cuts(name), true_cuts)
    print(f"{name}: cut precision {p:.3f} recall {r:.3f}")
    min_p, min_r = FLOORS[name]
    assert p >= min_p and r >= min_r


@pytest.mark.parametrize("name", CLIPS)
def test_hybrid_cuts_match_truth_dev(name):
    true_cuts = [s["start_frame"] for s in truth(name)["shots"]][1:]
    p, r = precision_recall(segment(clip(name), *HYBRID)[0], true_cuts)
    print(f"{name}: hybrid cut precision {p:.3f} recall {r:.3f}")
    min_p, min_r = HYBRID_FLOORS[name]
    assert p >= min_p and r >= min_r


@pytest.mark.parametrize("name", sorted(DEVHARD_FLOORS))
def test_hybrid_cuts_match_truth_devhard(name):
    """Montages joined by cross-fades and dips, a fast montage with white flashes, a trailer."""
    folder = DATA / "devhard" / name
    if not (folder / "truth.json").is_file():
        pytest.skip(f"no devhard clip {name}")
    t = json.loads((folder / "truth.json").read_text())
    true_cuts = [s["start_frame"] for s in t["shots"]][1:]
    p, r = precision_recall(segment(folder / t.get("video", "video.mp4"), *HYBRID)[0], true_cuts)
    print(f"{name}: hybrid cut precision {p:.3f} recall {r:.3f}")
    min_p, min_r = DEVHARD_FLOORS[name]
    assert p >= min_p and r >= min_r


def test_precision_recall_helper():
    assert precision_recall([10, 50], [11, 80]) == (0.5, 0.5)
    assert precision_recall([], []) == (1.0, 1.0)


# ---- transitions made from real dev footage ---------------------------------------------------

W, H, FPS = 320, 180, 25


def frames_of(name: str, start: int, count: int) -> np.ndarray:
    """`count` RGB frames (float) of a dev clip from frame `start`, at W x H."""
    out = []
    with av.open(str(clip(name))) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= start + count:
                break
            if i >= start:
                out.append(f.to_ndarray(width=W, height=H, format="rgb24").astype(np.float32))
    assert len(out) == count
    return np.stack(out)


# one shot from each of three dev clips (inside their shots, clear of their own cuts)
@pytest.fixture(scope="module")
def shots():
    return {"friends": frames_of("friends", 5, 60), "avenger2": frames_of("avenger2", 180, 60),
            "herapheri": frames_of("herapheri", 100, 60), "billhyland": frames_of("billhyland", 100, 80)}


def write(tmp_path, frames: np.ndarray):
    path = tmp_path / "made.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "23"}
        for f in np.clip(frames, 0, 255).astype(np.uint8):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def crossfade(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """a's last n frames blend into b's first n; the boundary is the blend's middle frame."""
    alpha = ((np.arange(n) + 1) / (n + 1))[:, None, None, None]
    mixed = (1 - alpha) * a[len(a) - n:] + alpha * b[:n]
    return np.concatenate([a[:len(a) - n], mixed, b[n:]]), len(a) - n + n // 2


def test_cut_found_in_the_middle_of_a_cross_fade(tmp_path, shots):
    video, middle = crossfade(shots["friends"], shots["avenger2"], 12)
    cuts, _ = segment(write(tmp_path, video), *HYBRID)
    assert len(cuts) == 1 and abs(cuts[0] - middle) <= 2, (cuts, middle)


def test_cut_found_in_a_dip_through_black(tmp_path, shots):
    a, b = shots["avenger2"].copy(), shots["herapheri"].copy()
    a[-9:] *= (1 - np.arange(9) / 8)[:, None, None, None]         # fades out to a black frame
    b[:8] *= ((np.arange(8) + 1) / 9)[:, None, None, None]        # and the next shot fades in
    cuts, _ = segment(write(tmp_path, np.concatenate([a, b])), *HYBRID)
    # the boundary: just after the black frame (as devhard's dips are labelled)
    assert len(cuts) == 1 and abs(cuts[0] - len(a)) <= 2, (cuts, len(a))


@pytest.mark.parametrize("colour", [255.0, 0.0])
def test_flash_inside_a_shot_does_not_split_it(tmp_path, shots, colour):
    video = shots["billhyland"].copy()
    video[40:42] = 0.1 * video[40:42] + 0.9 * colour      # a two-frame white (black) flash
    cuts, _ = segment(write(tmp_path, video), *HYBRID)
    assert cuts == []


def test_flash_between_two_shots_is_one_cut(tmp_path, shots):
    a, b = shots["friends"][:40], shots["avenger2"][:40].copy()
    b[:2] = 0.1 * b[:2] + 0.9 * 255.0                     # the new shot opens on a white flash
    cuts, _ = segment(write(tmp_path, np.concatenate([a, b])), *HYBRID)
    assert len(cuts) == 1 and abs(cuts[0] - 40) <= 2, cuts


def test_shot_of_0_4_s_is_kept(tmp_path, shots):
    short = int(0.4 * FPS)                                 # 10 frames
    video = np.concatenate([shots["friends"][:40], shots["avenger2"][:short], shots["herapheri"][:40]])
    cuts, _ = segment(write(tmp_path, video), *HYBRID)
    assert cuts == pytest.approx([40, 40 + short], abs=1)
    # the old default (0.5 s minimum) cannot keep it
    old, _ = segment(write(tmp_path, video), "content", 20.0, 0.5)
    assert len(old) < 2


def test_resumed_stream_reports_cuts_in_stream_frame_numbers(shots):
    """A resumed ingest starts at a later frame number: cuts come back in those numbers."""
    video = np.concatenate([shots["friends"][:40], shots["herapheri"][:40]]).astype(np.uint8)
    seg = ShotSegmenter(FPS, *HYBRID, first_shot=7)
    events = []
    for i, f in enumerate(video):
        small = np.ascontiguousarray(f[::2, ::2, ::-1])    # BGR, 160 px, as the decoder makes it
        events += seg.push(VideoFrame(1000 + i, (1000 + i) / FPS, small))
    events += seg.flush()
    closed = [e.shot for e in events if isinstance(e, ShotClosed)]
    assert [(s.index, s.start_frame, s.end_frame) for s in closed] == [(7, 1000, 1040), (8, 1040, 1080)]
