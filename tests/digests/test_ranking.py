from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from digests.ranking import MISSING, rank, value_at

T0 = datetime(2026, 11, 21, tzinfo=UTC)


def run(result, minutes=0, flow=False):
    return SimpleNamespace(
        result=result, finished_at=T0 + timedelta(minutes=minutes), flow_version_id=1 if flow else None
    )


def test_value_at__follows_dicts_and_list_indexes():
    data = {"a": {"b": [{"c": 3}]}}
    assert value_at(data, "a.b.0.c") == 3
    assert value_at(data, "a.x") is MISSING
    assert value_at(data, "a.b.5") is MISSING


def test_rank__highest_first_newest_first_on_ties_and_unnumbered_left_out():
    runs = [run({"score": 2}, 1), run({"score": 9}, 2), run({"score": 2}, 3), run({"score": "high"}, 4), run({}, 5)]
    ranking = rank(runs, items_path="", rank_by="score", descending=True, limit=3)
    assert [(i.value, i.run.finished_at.minute) for i in ranking.top] == [(9, 2), (2, 3), (2, 1)]
    assert (ranking.considered, ranking.unranked) == (5, 2)


def test_rank__ascending_and_limit():
    runs = [run({"score": s}, i) for i, s in enumerate([5, 1, 4, 2, 3, 0.5])]
    ranking = rank(runs, items_path="", rank_by="score", descending=False, limit=5)
    assert [i.value for i in ranking.top] == [0.5, 1, 2, 3, 4]


def test_rank__a_flow_runs_score_is_found_under_output():
    ranking = rank(
        [run({"output": {"score": 7}, "path": []}, flow=True)], items_path="", rank_by="score", descending=True, limit=5
    )
    assert ranking.top[0].value == 7
    assert ranking.top[0].data == {"score": 7}  # the email shows the flow's output, not its history


def test_rank__entries_of_a_list_inside_each_result():
    runs = [
        run({"leads": [{"n": "a", "score": 1}, {"n": "b", "score": 8}]}),
        run({"leads": [{"n": "c", "score": 5}]}, 1),
    ]
    ranking = rank(runs, items_path="leads", rank_by="score", descending=True, limit=2)
    assert [i.data["n"] for i in ranking.top] == ["b", "c"]


def test_rank__without_rank_by_newest_first():
    runs = [run({"x": 1}, 1), run({"x": 2}, 2)]
    assert [i.data["x"] for i in rank(runs, items_path="", rank_by="", descending=True, limit=5).top] == [2, 1]
