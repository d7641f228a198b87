"""Evaluation: the metric code on hand-made rankings with known answers, `castfinder eval` end to
end on one dev clip, and `castfinder eval-faces` on the deepface pairs."""

import json

import pytest

from castfinder.index.evaluation import (average_precision, ceiling_ap, cut_precision_recall, interpolated_pr, precision_at,
                              ranx_metrics, recall_at)

from conftest import DATA, DEV, run_cli


def test_metrics_on_hand_made_rankings():
    relevant = {1, 2}
    ranked = [1, 5, 2, 7]
    # AP = (1/1 + 2/3) / 2
    assert average_precision(ranked, relevant) == pytest.approx(5 / 6)
    assert average_precision([5, 7], relevant) == 0.0
    assert average_precision([2, 1], relevant) == 1.0
    assert average_precision([1], relevant) == pytest.approx(0.5)          # recall denominator = all relevant
    assert precision_at(ranked, relevant, 1) == 1.0 and precision_at(ranked, relevant, 5) == pytest.approx(0.4)
    assert recall_at(ranked, relevant, 1) == 0.5 and recall_at(ranked, relevant, 5) == 1.0
    assert interpolated_pr(ranked, relevant) == [1.0] * 6 + [2 / 3] * 5
    m = ranx_metrics({"a": ranked, "b": [5, 7], "c": [2, 1]}, {"a": relevant, "b": relevant, "c": relevant})
    assert m["per_query"]["a"]["map"] == pytest.approx(5 / 6)
    assert m["per_query"]["b"]["map"] == 0.0 and m["per_query"]["c"]["map"] == 1.0
    assert m["overall"]["map"] == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert m["per_query"]["a"]["precision@5"] == pytest.approx(0.4) and m["per_query"]["a"]["recall@1"] == 0.5
    assert cut_precision_recall([10, 50], [11, 80]) == (0.5, 0.5)
    # the ceiling: shot 2 (a face found) moves to the top, the rest keep their order
    assert ceiling_ap([5, 1, 7, 2], relevant, {2}) == pytest.approx((1 + 2 / 3) / 2)
    assert ceiling_ap(ranked, relevant, set()) == average_precision(ranked, relevant)
    assert ceiling_ap([5, 7], {1, 2, 3}, {1, 2}) == pytest.approx(2 / 3)      # a shot never returned stays lost


def test_eval_end_to_end_on_one_clip(tmp_path):
    out = tmp_path / "eval"
    r = run_cli("eval", "--data", DEV, "--clips", "friends", "--out", out, timeout=1500)
    assert r.returncode == 0, r.stderr
    assert "## Ablation" in r.stdout and "| default | 1.000 |" in r.stdout
    report = json.loads((out / "report.json").read_text())
    for preset in ("default", "report"):
        entry = report["presets"][preset]
        assert entry["map"] >= 0.99                                        # measured 1.000 on friends
        for q, v in entry["metrics"]["per_query"].items():
            assert v["map"] == pytest.approx(v["ap"], abs=1e-4), q        # ranx agrees with the README rule
        assert entry["shots"][0]["precision"] == 1.0 and entry["shots"][0]["recall"] == 1.0
        assert all((out / preset / f).exists() for f in ("pr_all.png", "pr_friends_Joey.png"))
    # where queries lose: every friends character's face is found in each of its shots, and ranked first
    losses = report["presets"]["default"]["losses"]
    assert set(losses) == set(report["presets"]["default"]["metrics"]["per_query"])
    for q, v in losses.items():
        assert v["present"] >= v["visible"] >= v["face_found"] >= 1, q
        assert v["ap"] <= v["ceiling_found"] <= v["ceiling_visible"] + 1e-9, q
    assert "## Where queries lose (default)" in r.stdout
    rows = {row["change"]: row for row in report["ablation"]}
    assert rows["dedup: none"]["map"] is not None and rows["fusion: rrf"]["map"] is not None
    assert "weights" in rows["face embedder: arcface"]["skipped"]         # not installed here: skipped with a reason
    assert [s["photos"] for s in report["survey"]] == [1, 2, 3]
    assert (out / "query_count_survey.png").stat().st_size > 5000
    # a second run reuses the indexes: nothing is ingested again
    r = run_cli("eval", "--data", DEV, "--clips", "friends", "--out", out, "--no-ablation", "--no-survey", timeout=600)
    assert r.returncode == 0 and "ingested" not in r.stderr


def test_eval_bad_input(tmp_path):
    r = run_cli("eval", "--data", tmp_path / "nothing", "--out", tmp_path / "o")
    assert r.returncode == 2 and "no such directory" in r.stderr
    r = run_cli("eval", "--data", DEV, "--clips", "nosuchclip", "--out", tmp_path / "o")
    assert r.returncode == 2 and "unknown clip" in r.stderr


def test_eval_faces_reports_each_embedder():
    r = run_cli("eval-faces", DATA / "faces" / "deepface", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    rows = {row["embedder"]: row for row in json.loads(r.stdout)}
    assert rows["dlib-resnet"]["accuracy"] >= 0.98 and rows["dlib-resnet"]["roc_auc"] >= 0.99   # measured 1.000 / 1.000
    assert "skipped" in rows["arcface"]
