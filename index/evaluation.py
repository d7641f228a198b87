"""Scoring ranked shots against truth.json, with the rule in shared/data/README.md: each returned
shot maps to the true shot holding its midpoint, only the first occurrence of a true shot counts,
and AP is taken over the true shots where the character is present."""

from __future__ import annotations


def true_shot_at(truth: dict, time_s: float) -> int | None:
    for s in truth["shots"]:
        if s["start_s"] <= time_s < s["end_s"]:
            return s["index"]
    last = truth["shots"][-1]
    return last["index"] if abs(time_s - last["end_s"]) < 1e-6 else None


def map_to_true(truth: dict, ranked: list[tuple[float, float]]) -> list[int]:
    """(start_s, end_s) of returned shots, best first → true shot indices, first occurrences only."""
    seen, out = set(), []
    for start, end in ranked:
        t = true_shot_at(truth, (start + end) / 2)
        if t is not None and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def average_precision(ranked_true: list[int], relevant: set[int]) -> float:
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for rank, shot in enumerate(ranked_true, start=1):
        if shot in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


def relevant_shots(truth: dict, character: str) -> set[int]:
    return {s["index"] for s in truth["shots"] if character in s["present"]}
