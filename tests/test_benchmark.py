"""`metarl benchmark`: the timing helper and the printed table (no timing asserted)."""

from __future__ import annotations

import pytest

from metarl.cli import main


def test_seconds_per_call_is_the_median_after_the_warmup_calls(monkeypatch):
    import metarl.benchmark as benchmark

    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # durations 1, 3, 2 after the warmup
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: next(clock))
    calls = []
    assert benchmark.seconds_per_call(lambda: calls.append(1), repeats=3, warmup=2) == 2.0
    assert len(calls) == 5


def test_sine_benchmark_runs_each_configuration_and_prints_loop_vs_vmap(monkeypatch, capsys):
    """Each configuration's meta-iteration really runs once; its time is faked (loop 4 ms,
    vmap 1 ms), so the table's ms and speed-up columns are checked, not this machine."""
    import metarl.supervised.benchmarks as benchmarks

    real_iteration, ran = benchmarks._metarl_iteration, []

    class Tagged:
        def __init__(self, method, steps, vectorize):
            self.vectorize = vectorize
            self.key = (method, steps, vectorize)
            self.iteration = real_iteration(method, steps, vectorize)

        def __call__(self):
            ran.append(self.key)
            return self.iteration()

    def fake_seconds(fn, repeats, warmup=3):
        fn()
        return 0.004 if fn.vectorize == "loop" else 0.001

    monkeypatch.setattr(benchmarks, "_metarl_iteration", Tagged)
    monkeypatch.setattr(benchmarks, "seconds_per_call", fake_seconds)
    monkeypatch.setattr(benchmarks, "is_installed", lambda module: False)
    assert main(["benchmark", "sine", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "cores, torch" in out
    assert sorted(ran) == sorted((m, s, v) for m in ("maml", "fomaml", "reptile")
                                 for s in (1, 5) for v in ("loop", "vmap"))
    rows = [line.split() for line in out.splitlines()
            if line.split()[:1] in (["maml"], ["fomaml"], ["reptile"])]
    assert len(rows) == 6
    for row in rows:
        assert row[2:] == ["4", "1", "4.0x", "-"], row
    assert "learn2learn not installed" in out


@pytest.mark.parametrize("repeats", ["0", "-3"])
def test_benchmark_repeats_must_be_positive(repeats, capsys):
    assert main(["benchmark", "sine", "--repeats", repeats]) == 2
    assert "--repeats" in capsys.readouterr().err
