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


def visible_shots(truth: dict, character: str) -> set[int]:
    """True shots where the character's face can be seen (present also counts backs of heads)."""
    return {s["index"] for s in truth["shots"] if character in s.get("faces", [])}


def ceiling_ap(ranked_true: list[int], relevant: set[int], first: set[int]) -> float:
    """AP had the shots in `first` been ranked first, the rest keeping their order: with `first` the
    relevant shots where a face was found, how far perfect face ranking alone could lift a query."""
    first = set(first) & set(relevant)
    return average_precision(sorted(first) + [s for s in ranked_true if s not in first], relevant)


def precision_at(ranked_true: list[int], relevant: set[int], k: int) -> float:
    return sum(1 for s in ranked_true[:k] if s in relevant) / k


def recall_at(ranked_true: list[int], relevant: set[int], k: int) -> float:
    return sum(1 for s in ranked_true[:k] if s in relevant) / len(relevant) if relevant else 0.0


def ranx_metrics(rankings: dict[str, list[int]], relevants: dict[str, set[int]], ks=(1, 5, 10, 20)) -> dict:
    """AP (ranx 'map' per query), P@k and R@k through ranx, per query and overall."""
    from ranx import Qrels, Run, evaluate
    names = [q for q in rankings if relevants.get(q)]
    qrels = Qrels({q: {f"s{s}": 1 for s in relevants[q]} for q in names})
    # a query that returned nothing still counts (AP 0): ranx needs one entry, a shot no one holds
    run = Run({q: ({f"s{s}": 1.0 / (i + 1) for i, s in enumerate(rankings[q])} or {"none": 0.0}) for q in names})
    metrics = ["map"] + [f"precision@{k}" for k in ks] + [f"recall@{k}" for k in ks]
    per_query = evaluate(qrels, run, metrics, return_mean=False)
    out = {q: {m: float(per_query[m][i]) for m in metrics} for i, q in enumerate(names)}
    overall = {m: float(sum(v[m] for v in out.values()) / len(out)) for m in metrics} if out else {}
    return {"per_query": out, "overall": overall}


def pr_points(ranked_true: list[int], relevant: set[int]) -> tuple[list[float], list[float]]:
    """Precision and recall after each rank (the PR curve of one query)."""
    p, r, hits = [], [], 0
    for rank, s in enumerate(ranked_true, start=1):
        hits += s in relevant
        p.append(hits / rank)
        r.append(hits / len(relevant) if relevant else 0.0)
    return p, r


def interpolated_pr(ranked_true: list[int], relevant: set[int], levels: int = 11) -> list[float]:
    """Interpolated precision at recall 0, 0.1, ..., 1 (0 where that recall is never reached)."""
    p, r = pr_points(ranked_true, relevant)
    out = []
    for level in (i / (levels - 1) for i in range(levels)):
        ps = [pi for pi, ri in zip(p, r) if ri >= level - 1e-9]
        out.append(max(ps) if ps else 0.0)
    return out


def cut_precision_recall(pred: list[int], true: list[int], tol: int = 2) -> tuple[float, float]:
    """Shot cuts (frame numbers): a predicted cut within `tol` frames of a true one counts."""
    if not pred and not true:
        return 1.0, 1.0
    p = sum(any(abs(x - t) <= tol for t in true) for x in pred) / len(pred) if pred else 1.0
    r = sum(any(abs(x - t) <= tol for x in pred) for t in true) / len(true) if true else (1.0 if not pred else 0.0)
    return p, r
