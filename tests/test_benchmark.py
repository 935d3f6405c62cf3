"""`metarl benchmark`: the timing helper and the printed table (no timing asserted)."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from metarl.benchmark import Spread, spread_note
from metarl.cli import main
from metarl.supervised.tasks import TaskBatch


def test_seconds_per_call_is_the_median_after_the_warmup_calls(monkeypatch):
    import metarl.benchmark as benchmark

    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # durations 1, 3, 2 after the warmup
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: next(clock))
    calls = []
    assert benchmark.seconds_per_call(lambda: calls.append(1), repeats=3, warmup=2) == (
        benchmark.Spread(median=2.0, low=1.0, high=3.0))
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
        return Spread(0.004, 0.003, 0.005) if fn.vectorize == "loop" else Spread.of([0.001])

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
        assert row[2:] == ["4", "(3-5)", "1", "4.0x", "-", "-", "-"], row
    assert "(meta-batch 25, K=10, MLP 1-40-40-1; one timed call)" in out
    assert "learn2learn not installed; docs/BENCHMARKS.md says how to install it" in out


@pytest.mark.parametrize("repeats", ["0", "-3"])
def test_benchmark_repeats_must_be_positive(repeats, capsys):
    assert main(["benchmark", "sine", "--repeats", repeats]) == 2
    assert "--repeats" in capsys.readouterr().err


def _run_shrunk(monkeypatch, capsys, name: str, repeats: str,
                calls: list[tuple[int, int]] | None = None) -> str:
    """``metarl benchmark NAME`` on its shipped config shrunk to 2 tasks x 2 episodes of 5
    steps (and 8 hidden units), so that every row runs here in seconds. Each stepping runs
    once and its rate is faked as one step per second: the printed rate is the number of env
    steps the benchmark counts for one call. Returns what it printed; ``calls`` receives,
    for each timed stepping in turn, how many times it called the policy and Gymnasium's
    ``SyncVectorEnv.step``."""
    import metarl.rl.benchmarks as benchmarks

    real = benchmarks._shipped

    def shipped(config_name):
        data = real(config_name)
        return {**data, "env": {**data["env"], "max_episode_steps": 5},
                "policy": {**data["policy"], "hidden_sizes": [8]},
                "training": {**data["training"], "meta_batch_size": 2, "episodes_per_task": 2}}

    counts = {"policy": 0, "sync": 0}
    real_policy, real_sync_step = benchmarks.make_policy, gym.vector.SyncVectorEnv.step

    def counting_policy(config):
        policy = real_policy(config)

        def counted(*args, **kwargs):
            counts["policy"] += 1
            return policy(*args, **kwargs)

        return counted

    def counting_sync_step(self, actions):
        counts["sync"] += 1
        return real_sync_step(self, actions)

    def one_call(run, steps, repeats):
        before = dict(counts)
        run()
        if calls is not None:
            calls.append((counts["policy"] - before["policy"], counts["sync"] - before["sync"]))
        return Spread.of([float(steps)])

    monkeypatch.setattr(benchmarks, "make_policy", counting_policy)
    monkeypatch.setattr(gym.vector.SyncVectorEnv, "step", counting_sync_step)
    monkeypatch.setattr(benchmarks, "_shipped", shipped)
    monkeypatch.setattr(benchmarks, "_steps_per_second", one_call)
    assert main(["benchmark", name, "--repeats", repeats]) == 0
    return capsys.readouterr().out


def _check_split(out: str) -> None:
    """The seconds-per-iteration table: one row per variant, the parts within the total."""
    split = out[out.index("seconds per meta-iteration"):]
    rows = [line for line in split.splitlines()[3:] if line.strip()]
    assert [r.split(",")[0].split()[0] for r in rows] == ["maml", "maml", "fomaml"]
    assert "every 5th step" in rows[1]
    for row in rows:
        *parts, total, total_range = row.split()[-5:]
        sampling, adaptation, trpo = map(float, parts)
        assert min(sampling, adaptation, trpo) > 0
        assert sampling + adaptation + trpo <= float(total) * 1.001
        if total_range != "-":  # one iteration timed: no range
            low, high = map(float, total_range.split("-"))
            assert low <= float(total) <= high


def test_navigation_benchmark_counts_each_steppings_env_steps(monkeypatch, capsys):
    calls = []
    out = _run_shrunk(monkeypatch, capsys, "navigation", "2", calls)
    assert ("(2 tasks x 2 episodes x 5 steps, full episodes; median (min-max) of 2 timed "
            "calls)") in out  # --repeats 2: no more calls than that
    rates = [line.split()[-1] for line in out.splitlines()
             if line.startswith(("Gymnasium", "metarl"))]
    assert rates == ["20"] * 4  # 2 tasks x 2 episodes x 5 steps
    # (policy calls, SyncVectorEnv steps): 5 steps a call; the policy where the row says
    assert calls == [(0, 5), (5, 5), (0, 0), (5, 0)]
    _check_split(out)


def test_cheetah_benchmark_counts_each_steppings_env_steps(monkeypatch, capsys):
    calls = []
    out = _run_shrunk(monkeypatch, capsys, "cheetah", "1", calls)
    assert "(2 tasks x 2 episodes x 5 steps; MuJoCo threads:" in out
    assert "; one timed call)" in out  # --repeats 1: one
    rates = {line.rsplit(maxsplit=1)[0]: line.split()[-1] for line in out.splitlines()
             if line.startswith(("Gymnasium", "raw", "metarl"))}
    assert rates == {
        "Gymnasium SyncVectorEnv (2 envs), random actions": "10",  # one env per task
        "raw mujoco.batch (4 sims, 5 substeps)": "20",
        "metarl BatchedHalfCheetah (rewards, observations)": "20",
        "metarl sampler (policy per task in the loop)": "20",
    }
    assert calls == [(0, 5), (0, 0), (0, 0), (5, 0)]  # (policy calls, SyncVectorEnv steps)
    _check_split(out)


def test_omniglot_benchmark_runs_each_method_and_prints_loop_vs_vmap(monkeypatch, capsys):
    import metarl.supervised.benchmarks as benchmarks

    monkeypatch.setattr(benchmarks, "OMNIGLOT_SETTINGS", {"tiny": (3, 1, 2, 1, 0.4)})
    real_metarl, ran = benchmarks._omniglot_metarl, []

    def tagged(setting, method, vectorize, device):
        iteration = real_metarl(setting, method, vectorize, device)

        def run():
            ran.append((method, vectorize))
            assert device == torch.device("cpu")
            iteration()

        run.vectorize = vectorize
        return run

    def fake_seconds(fn, repeats, warmup=3):
        fn()
        return Spread.of([0.5] if fn.vectorize else [2.0, 1.5, 2.5])

    monkeypatch.setattr(benchmarks, "_omniglot_metarl", tagged)
    monkeypatch.setattr(benchmarks, "seconds_per_call", fake_seconds)
    monkeypatch.setattr(benchmarks, "is_installed", lambda module: False)
    assert main(["benchmark", "omniglot", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert sorted(ran) == sorted((m, v) for m in ("maml", "fomaml", "reptile")
                                 for v in (False, True))
    rows = [line.split() for line in out.splitlines() if line.startswith("tiny ")]
    assert [row[1] for row in rows] == ["maml", "fomaml", "reptile"]
    for row in rows:
        assert row[2:] == ["2", "(1.5-2.5)", "0.5", "4.00x", "-", "-", "-"], row
    assert "(learn2learn not installed; docs/BENCHMARKS.md says how to install it)" in out
    assert "Omniglot on cpu, seconds per meta-iteration" in out


def test_the_omniglot_benchmark_times_learn2learn_where_installed(monkeypatch, capsys,
                                                                 stand_in_learn2learn):
    """With learn2learn: its own iteration is timed (not ours) beside our loop and vmap, and
    its meta-gradient is checked against ours, for maml and fomaml (it has no Reptile)."""
    import metarl.supervised.benchmarks as benchmarks

    monkeypatch.setattr(benchmarks, "OMNIGLOT_SETTINGS", {"tiny": (3, 1, 2, 1, 0.4)})
    real_metarl, real_l2l = benchmarks._omniglot_metarl, benchmarks._omniglot_learn2learn

    def tag(iteration, kind):
        def run():
            iteration()

        run.kind = kind
        return run

    monkeypatch.setattr(benchmarks, "_omniglot_metarl", lambda setting, method, vectorize,
                        device: tag(real_metarl(setting, method, vectorize, device),
                                    "vmap" if vectorize else "loop"))
    monkeypatch.setattr(benchmarks, "_omniglot_learn2learn", lambda setting, method, device:
                        tag(real_l2l(setting, method, device), "l2l"))
    monkeypatch.setattr(benchmarks, "seconds_per_call", lambda fn, repeats, warmup=3: fn() or
                        Spread.of([{"loop": 2.0, "vmap": 0.5, "l2l": 3.0}[fn.kind]]))
    assert main(["benchmark", "omniglot", "--repeats", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith("tiny ")]
    # learn2learn's MAML (first_order) made for each timing and each gradient check
    assert stand_in_learn2learn == [False, False, True, True]
    for row, method in zip(rows, ("maml", "fomaml", "reptile"), strict=True):
        assert row[1:5] == [method, "2", "0.5", "4.00x"]
        if method == "reptile":
            assert row[5:] == ["-", "-", "-"]
        else:
            assert row[5:7] == ["3", "6.00x"] and float(row[7]) < 1e-12, row


def test_omniglot_timings_run_on_the_device_and_wait_for_it(monkeypatch, stand_in_learn2learn):
    import metarl.supervised.benchmarks as benchmarks

    wrapped, setups = [], []
    monkeypatch.setattr(benchmarks, "synchronized",
                        lambda fn, device: wrapped.append(device) or fn)
    x, y = torch.rand(2, 4, 2), torch.tensor([0, 1, 0, 1]).expand(2, 4)
    monkeypatch.setattr(benchmarks, "_omniglot_setup",
                        lambda *args: setups.append(args[-1]) or (
                            torch.nn.Linear(2, 2), lambda: TaskBatch(x, y, x, y)))
    gpu = torch.device("cuda", 1)
    benchmarks._omniglot_metarl((3, 1, 2, 1, 0.4), "maml", True, gpu)
    benchmarks._omniglot_learn2learn((3, 1, 2, 1, 0.4), "maml", gpu)
    assert wrapped == [gpu, gpu] and setups == [gpu, gpu]
    benchmarks._omniglot_gradient_gap((3, 1, 2, 1, 0.4), "maml")
    assert setups[-1] == torch.device("cpu")  # the float64 check runs on the CPU


def test_omniglot_setup_puts_model_and_tasks_on_the_device():
    import metarl.supervised.benchmarks as benchmarks

    model, sample = benchmarks._omniglot_setup(3, 1, 2, 1, 0.4, torch.device("meta"))
    batch = sample()
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {t.device.type for t in (batch.support_x, batch.support_y, batch.query_x,
                                    batch.query_y)} == {"meta"}


class _StandInMAML(torch.nn.Module):
    """learn2learn's ``MAML`` interface (clone, adapt, call), written here for machines
    without learn2learn: the benchmark's plumbing around it is what is tested."""

    def __init__(self, module, lr, first_order=False):
        super().__init__()
        self.module, self.lr, self.first_order = module, lr, first_order

    def clone(self):
        return _StandInLearner(self.module, dict(self.module.named_parameters()), self.lr,
                               self.first_order)


class _StandInLearner:
    def __init__(self, module, params, lr, first_order):
        self.module, self.params, self.lr, self.first_order = module, params, lr, first_order

    def __call__(self, x):
        return torch.func.functional_call(self.module, self.params, (x,))

    def adapt(self, loss):
        grads = torch.autograd.grad(loss, list(self.params.values()),
                                    create_graph=not self.first_order)
        self.params = {k: v - self.lr * (g.detach() if self.first_order else g)
                       for (k, v), g in zip(self.params.items(), grads, strict=True)}


@pytest.fixture
def stand_in_learn2learn(monkeypatch):
    import sys
    import types

    import metarl.supervised.benchmarks as benchmarks

    made = []

    def maml(module, lr, first_order=False):
        made.append(first_order)
        return _StandInMAML(module, lr, first_order)

    module = types.ModuleType("learn2learn")
    module.algorithms = types.SimpleNamespace(MAML=maml)
    monkeypatch.setitem(sys.modules, "learn2learn", module)
    monkeypatch.setattr(benchmarks, "is_installed", lambda name: name == "learn2learn")
    return made


def test_the_sine_benchmark_times_learn2learn_and_compares_its_meta_gradient(
        monkeypatch, capsys, stand_in_learn2learn):
    import metarl.supervised.benchmarks as benchmarks

    def fake_seconds(fn, repeats, warmup=3):
        fn()  # each timed iteration runs once
        return Spread.of([{"loop": 0.004, "vmap": 0.001}.get(getattr(fn, "vectorize", None),
                                                              0.006)])

    real_iteration = benchmarks._metarl_iteration

    def tagged(method, steps, vectorize):
        run = real_iteration(method, steps, vectorize)
        wrapper = lambda: run()  # noqa: E731
        wrapper.vectorize = vectorize
        return wrapper

    monkeypatch.setattr(benchmarks, "_metarl_iteration", tagged)
    monkeypatch.setattr(benchmarks, "seconds_per_call", fake_seconds)
    rows = benchmarks.benchmark_sine(repeats=1)
    out = capsys.readouterr().out
    assert "meta-gradient, in float64" in out
    # timed iteration and gradient check of each of maml, fomaml at 1 and 5 steps
    assert stand_in_learn2learn == [False, False, False, False, True, True, True, True]
    for row in rows:
        if row[0] == "reptile":
            assert row[5:] == ["-", "-", "-"]
        else:
            assert row[5] == Spread.of([6.0]) and row[6] == "6.0x"
            assert float(row[7]) < 1e-12, row  # the same meta-gradient, float64 rounding


def test_the_gradient_gap_sees_a_different_meta_gradient(monkeypatch, stand_in_learn2learn):
    import sys

    import metarl.supervised.benchmarks as benchmarks
    from metarl.supervised.meta import mse_loss
    from metarl.supervised.tasks import TaskBatch

    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    batch = TaskBatch(*(torch.randn(3, 5, 1, generator=generator) for _ in range(4)))

    def gap(method):
        return benchmarks.learn2learn_gradient_gap(model, batch, mse_loss, method=method,
                                                   steps=2, lr=0.3)

    assert gap("maml") < 1e-12 and gap("fomaml") < 1e-12
    assert stand_in_learn2learn == [False, True]
    # relative to the largest entry of ours: ours 1% larger everywhere gives 0.01 / 1.01
    real_meta_gradient = benchmarks.meta_gradient

    def one_percent_larger(*args, **kwargs):
        result = real_meta_gradient(*args, **kwargs)
        return result._replace(params={name: 1.01 * value
                                       for name, value in result.params.items()})

    monkeypatch.setattr(benchmarks, "meta_gradient", one_percent_larger)
    assert gap("maml") == pytest.approx(0.01 / 1.01, rel=1e-9)
    monkeypatch.setattr(benchmarks, "meta_gradient", real_meta_gradient)
    # a learn2learn that always differentiates first order: against our second order, the
    # gap shows it
    monkeypatch.setattr(sys.modules["learn2learn"].algorithms, "MAML",
                        lambda module, lr, first_order=False: _StandInMAML(module, lr, True))
    assert gap("maml") > 1e-3


def test_ours_and_the_real_learn2learn_give_one_meta_gradient():
    """Where learn2learn is installed (docs/BENCHMARKS.md: not by pip alone on Python 3.11),
    on the benchmark's Omniglot Conv4 with batch norm and on the sine MLP."""
    pytest.importorskip("learn2learn")
    import metarl.supervised.benchmarks as benchmarks

    for method in ("maml", "fomaml"):
        assert benchmarks._sine_gradient_gap(method, 2) < 1e-12
        assert benchmarks._omniglot_gradient_gap((3, 1, 4, 2, 0.4), method) < 1e-12


def test_unknown_benchmark_exits_2_naming_the_known_ones(capsys):
    assert main(["benchmark", "atari"]) == 2
    err = capsys.readouterr().err
    assert "atari" in err and "cheetah" in err


def test_seconds_per_call_is_the_median_not_the_mean(monkeypatch):
    import metarl.benchmark as benchmark

    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 28.0])  # durations 1, 3, 8: median 3, mean 4
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: next(clock))
    assert benchmark.seconds_per_call(lambda: None, repeats=3, warmup=0) == (
        benchmark.Spread(median=3.0, low=1.0, high=8.0))


def test_steps_per_second_times_each_call_after_one_warmup(monkeypatch):
    import metarl.rl.benchmarks as benchmarks

    calls = []
    clock = iter([10.0, 12.0, 20.0, 21.0, 30.0, 34.0])  # 2, 1 and 4 s for 100 steps each
    monkeypatch.setattr(benchmarks.time, "perf_counter", lambda: next(clock))
    assert benchmarks._steps_per_second(lambda: calls.append(1), 100, 3) == Spread(
        median=50.0, low=25.0, high=100.0)
    assert len(calls) == 4


def test_a_spread_prints_its_median_and_range_in_the_units_asked():
    assert Spread.of([3.0, 1.0, 2.0, 10.0]) == Spread(median=2.5, low=1.0, high=10.0)
    assert Spread.of([0.004, 0.002]).scaled(1e3).format() == "3 (2-4)"
    assert Spread.of([41848.2, 40100.0, 42301.9]).format(",.0f") == "41,848 (40,100-42,302)"
    assert Spread.of([0.25, 0.25]).format() == "0.25"  # equal measurements: no range
    assert Spread.of([41848.2, 41848.4]).format(",.0f") == "41,848"  # equal as printed
    with pytest.raises(ValueError, match="at least one"):
        Spread.of([])
    assert spread_note(5) == "median (min-max) of 5 timed calls"
    assert spread_note(1) == "one timed call"


@pytest.mark.parametrize(("repeats", "per_call", "calls"), [
    (20, 4, 5), (20, 10, 3), (8, 4, 3), (2, 4, 2), (1, 10, 1), (100, 10, 10)])
def test_rollout_rows_time_at_least_three_calls_where_repeats_allows(repeats, per_call, calls):
    from metarl.rl.benchmarks import rollout_calls

    assert rollout_calls(repeats, per_call) == calls


def test_benchmark_all_runs_each_benchmark_in_turn(monkeypatch, capsys):
    import metarl.rl.benchmarks as rl_benchmarks
    import metarl.supervised.benchmarks as supervised_benchmarks

    ran = []
    for module, name in [(supervised_benchmarks, "benchmark_sine"),
                         (rl_benchmarks, "benchmark_navigation"),
                         (rl_benchmarks, "benchmark_cheetah"),
                         (supervised_benchmarks, "benchmark_omniglot")]:
        monkeypatch.setattr(module, name,
                            lambda *, repeats, name=name, **on: ran.append((name, repeats)))
    assert main(["benchmark", "--repeats", "3"]) == 0
    assert ran == [("benchmark_sine", 3), ("benchmark_navigation", 3),
                   ("benchmark_cheetah", 3), ("benchmark_omniglot", 3)]


def test_each_timed_configuration_is_the_one_its_row_names(monkeypatch):
    """The sine trainer gets the method, inner steps and vectorization of its row; the
    Omniglot meta-gradient its vectorization; Omniglot times REPEATS/4 iterations."""
    import metarl.supervised.benchmarks as benchmarks
    import metarl.supervised.meta as meta
    from metarl.supervised.sine_experiment import SineExperiment

    configs = []
    real_make_trainer = SineExperiment.make_trainer
    monkeypatch.setattr(SineExperiment, "make_trainer",
                        lambda self, config: configs.append(config.adaptation)
                        or real_make_trainer(self, config))
    benchmarks._metarl_iteration("fomaml", 5, "vmap")
    assert (configs[0].method, configs[0].inner_steps, configs[0].vectorize) == (
        "fomaml", 5, "vmap")

    seen = []

    class Gradients:
        def __init__(self, params):
            self.params = {name: torch.zeros_like(value) for name, value in params.items()}

    def fake_meta_gradient(model, params, batch, loss, **kwargs):
        seen.append(kwargs)
        return Gradients(params)

    monkeypatch.setattr(meta, "meta_gradient", fake_meta_gradient)
    monkeypatch.setattr(benchmarks, "_omniglot_setup",  # no images: only the gradient matters
                        lambda *setting_and_device: (torch.nn.Linear(2, 2), lambda: None))
    monkeypatch.setattr(benchmarks, "OMNIGLOT_SETTINGS", {"tiny": (3, 1, 2, 1, 0.4)})
    repeats = []

    def fake_seconds(fn, n, warmup=3):
        repeats.append(n)
        fn()
        return Spread.of([1.0])

    monkeypatch.setattr(benchmarks, "seconds_per_call", fake_seconds)
    monkeypatch.setattr(benchmarks, "is_installed", lambda module: False)
    benchmarks.benchmark_omniglot(repeats=8)
    assert [(k["method"], k["vectorize"]) for k in seen] == [
        (m, v) for m in ("maml", "fomaml", "reptile") for v in (False, True)]
    assert set(repeats) == {2}


def test_iteration_split_trains_each_variant_it_names(monkeypatch, capsys):
    import metarl.rl.benchmarks as benchmarks

    made = []

    class FakeTrainer:
        def __init__(self):
            self.iterations = []
            self.last_timings = {"sampling": 0.1, "adaptation": 0.2, "trpo": 0.3}

        def train_iteration(self, i):
            self.iterations.append(i)

    def fake_make_trainer(config):
        made.append((config.adaptation.method, config.trpo.curvature_stride, FakeTrainer()))
        return made[-1][2]

    monkeypatch.setattr(benchmarks, "make_trainer", fake_make_trainer)
    # each variant: iteration 0 untimed, then iterations of 1 s and 3 s
    clock = iter([0.0, 1.0, 10.0, 13.0] * 3)
    monkeypatch.setattr(benchmarks.time, "perf_counter", lambda: next(clock))
    benchmarks.print_iteration_split("navigation", {"env": {"name": "navigation2d"}},
                                     iterations=2)
    assert [(method, stride) for method, stride, _ in made] == [
        ("maml", 1), ("maml", 5), ("fomaml", 1)]
    assert all(trainer.iterations == [0, 1, 2] for *_, trainer in made)
    rows = capsys.readouterr().out.splitlines()[-3:]
    assert all(row.split()[-5:-2] == ["0.1", "0.2", "0.3"] for row in rows), rows
    assert all(row.split()[-2:] == ["2", "1-3"] for row in rows), rows  # mean, range
    made.clear()
    clock = iter([0.0, 5.0] * 3)
    monkeypatch.setattr(benchmarks.time, "perf_counter", lambda: next(clock))
    benchmarks.print_iteration_split("navigation", {"env": {"name": "navigation2d"}},
                                     iterations=1)
    rows = capsys.readouterr().out.splitlines()[-3:]
    assert all(row.split()[-2:] == ["5", "-"] for row in rows), rows  # one: no range
