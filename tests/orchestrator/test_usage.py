"""Usage in this service's words: what is read from a report, what a cost is, a run's sum."""

from __future__ import annotations

from orchestrator import usage


def test_normalize_keeps_the_report_and_prices_only_when_both_prices_are_known():
    raw = {"prompt_tokens": 2000, "completion_tokens": 500, "total_tokens": 2500}
    priced = usage.normalize(raw, usage.prices({"price_input_per_mtok": 3,
                                                "price_output_per_mtok": 15}))
    assert priced == {**raw, "input_tokens": 2000, "output_tokens": 500, "cost_usd": 0.0135}
    assert usage.prices({"price_input_per_mtok": 3}) is None
    assert usage.normalize(raw)["cost_usd"] is None, "a cost is never guessed"
    own = usage.normalize({"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.5}, (3, 15))
    assert own["cost_usd"] == 0.5, "the reporter's own cost wins"
    odd = usage.normalize({"input_tokens": -1, "output_tokens": 2.5, "cost_usd": "free"})
    assert (odd["input_tokens"], odd["output_tokens"], odd["cost_usd"]) == (None, None, None)
    assert usage.normalize(None) is None and usage.normalize({}) is None
    assert usage.normalize(["not", "a", "dict"]) is None


def test_a_runs_sum_counts_what_each_step_reported():
    steps = [usage.normalize({"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.25}),
             None,
             {"prompt_tokens": 7, "completion_tokens": 3},  # stored before normalize existed
             usage.normalize({"input_tokens": 1, "output_tokens": 1})]
    assert usage.total(steps) == {"input_tokens": 18, "output_tokens": 9, "cost_usd": 0.25}
    assert usage.total([None, None]) is None
    assert usage.total([usage.normalize({"input_tokens": 4})])["cost_usd"] is None


def test_a_usage_file_is_read_only_when_it_holds_a_json_object(tmp_path):
    path = tmp_path / "usage.json"
    assert usage.read_report(str(path)) is None  # never written
    path.write_text('{"input_tokens": 3}')
    assert usage.read_report(str(path)) == {"input_tokens": 3}
    for text in ("", "[1, 2]", "not json", "{" + " " * usage.MAX_REPORT_BYTES + "}"):
        path.write_text(text)
        assert usage.read_report(str(path)) is None, text[:20]
