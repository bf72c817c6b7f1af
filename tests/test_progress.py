"""The cost line: items, the throughput of the first batches, the projected time; on the bar and in the log."""

from __future__ import annotations

import logging

import pytest

from rankwise.retrieval import progress
from rankwise.retrieval.progress import CostBar, CostEstimate, format_duration


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", c)
    return c


def test_the_line_comes_once_after_the_first_batches(clock, caplog):
    caplog.set_level(logging.INFO, logger="rankwise.cost")
    cost = CostEstimate("indexing scifact", 5183, "doc", warmup=3)
    lines = []
    for _ in range(6):
        lines.append(cost.update(64))  # the first batch starts the clock; 3 more give the rate
        clock.now += 6.4  # 10 docs/s
    assert lines[:3] == [None] * 3 and lines[4:] == [None, None]
    assert cost.rate == pytest.approx(10.0)
    assert cost.projected == pytest.approx((5183 - 64) / 10.0)
    assert lines[3] == "cost: indexing scifact: 5,183 docs at 10.0 doc/s (measured over 3 batches): about 8 min 31 s"
    assert [r.getMessage() for r in caplog.records] == [lines[3]]


def test_slow_items_read_as_seconds_per_item(clock):
    cost = CostEstimate("training cross-encoder", 20, "step", warmup=1, batch_word="step")
    cost.update(1)
    clock.now += 30.0
    assert cost.update(1) == ("cost: training cross-encoder: 20 steps at 30.0 s/step (measured over 1 step): "
                              "about 9 min 30 s")


def test_the_bar_carries_the_projection_and_a_disabled_bar_still_logs(clock, caplog):
    caplog.set_level(logging.INFO, logger="rankwise.cost")
    with CostBar(total=100, desc="mining negatives", unit="query", warmup=2, disable=False) as bar:
        for _ in range(4):
            bar.update(10)
            clock.now += 1.0
        assert "total ~" in bar.postfix
    with CostBar(total=100, desc="quiet", unit="query", warmup=1, disable=True) as bar:
        for _ in range(3):
            bar.update(10)
            clock.now += 1.0
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("cost: mining negatives: 100 queries at 10.0 query/s")
    assert messages[1].startswith("cost: quiet: 100 queries at 10.0 query/s (measured over 1 batch)")


def test_format_duration():
    assert [format_duration(s) for s in (4.25, 42, 498, 7500)] == ["4.2 s", "42 s", "8 min 18 s", "2 h 05 min"]
