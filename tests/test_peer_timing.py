"""scripts/time_pytorch_maml_rl.py: the loop it times, on a stand-in for pytorch-maml-rl.

The real peer runs in an environment of its own (gym 0.17), so these tests give the script a
fake checkout whose modules record how they are called."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from script_modules import SCRIPTS, load_script

timing = load_script("time_pytorch_maml_rl")

PEER_CONFIG = """\
env-name: "2DNavigation-v0"
env-kwargs: {low: -0.5, high: 0.5}
gamma: 0.99
gae-lambda: 1.0
first-order: false
hidden-sizes: [64, 64]
nonlinearity: "tanh"
fast-batch-size: 20
num-steps: 1
fast-lr: 0.1
num-batches: 500
meta-batch-size: 20
max-kl: 1.0e-2
cg-iters: 10
cg-damping: 1.0e-5
ls-max-steps: 15
ls-backtrack-ratio: 0.8
"""

FAKE_MODULES = {
    "gym/__init__.py": """
        from maml_rl import record

        class _Env:
            def close(self):
                record("env.close")

        def make(name, **kwargs):
            record("gym.make", name=name, kwargs=kwargs)
            return _Env()
    """,
    "maml_rl/__init__.py": """
        import json, os
        import torch

        def record(event, **fields):
            with open(os.environ["FAKE_PEER_LOG"], "a") as log:
                log.write(json.dumps({"event": event, "threads": torch.get_num_threads(),
                                      **fields}) + "\\n")

        record("import")
    """,
    "maml_rl/envs/__init__.py": "",
    "maml_rl/baseline.py": """
        import torch
        from maml_rl import record

        class LinearFeatureBaseline:
            def __init__(self, input_size):
                record("baseline", input_size=input_size)

            def fit(self):
                # as the peer's: torch 1's argument order, right-hand side first
                matrix = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
                coeffs, _ = torch.lstsq(torch.tensor([[2.0], [2.0]]), matrix)
                record("baseline.fit", coeffs=coeffs.flatten().tolist())
    """,
    "maml_rl/metalearners/__init__.py": """
        import time
        from maml_rl import record

        STEP_S = 0.2

        class MAMLTRPO:
            def __init__(self, policy, fast_lr, first_order, device):
                record("metalearner", fast_lr=fast_lr, first_order=first_order, device=device)

            def step(self, train_futures, valid_futures, **kwargs):
                record("step", futures=[train_futures, valid_futures], kwargs=kwargs)
                time.sleep(STEP_S)
                return {}
    """,
    "maml_rl/samplers/__init__.py": """
        import time
        import torch
        from maml_rl import record

        SAMPLE_S = 0.1  # each of sample_tasks, sample_async and sample_wait

        class _Episodes:
            def __init__(self, lengths):
                self.lengths = lengths

        class _Worker:
            def terminate(self):
                record("terminate")

        class MultiTaskSampler:
            def __init__(self, env_name, **kwargs):
                record("sampler", env_name=env_name, torch_seed=torch.initial_seed(),
                       kwargs={k: v for k, v in kwargs.items()
                               if k not in ("policy", "baseline", "env")},
                       given={k: type(kwargs[k]).__name__
                              for k in ("policy", "baseline", "env")})
                kwargs["baseline"].fit()
                self.workers = [_Worker() for _ in range(kwargs["num_workers"])]
                self.calls = 0

            def sample_tasks(self, num_tasks):
                record("sample_tasks", num_tasks=num_tasks)
                time.sleep(SAMPLE_S)
                return list(range(num_tasks))

            def sample_async(self, tasks, **kwargs):
                record("sample_async", tasks=len(tasks), kwargs=kwargs)
                self.calls += 1
                time.sleep(SAMPLE_S)
                return "train", "valid"

            def sample_wait(self, futures):
                record("sample_wait", futures=list(futures))
                time.sleep(SAMPLE_S)
                # two tasks; lengths grow with the iteration so each record is its own
                train = [_Episodes([100, 50 + self.calls]), _Episodes([100, 100])]
                valid = [_Episodes([10, 10]), _Episodes([10, 10])]
                return [train], valid
    """,
    "maml_rl/utils/__init__.py": "",
    "maml_rl/utils/helpers.py": """
        from maml_rl import record

        class _Policy:
            def share_memory(self):
                record("share_memory")

        def get_input_size(env):
            return 2

        def get_policy_for_env(env, hidden_sizes, nonlinearity):
            record("policy", hidden_sizes=hidden_sizes, nonlinearity=nonlinearity)
            return _Policy()
    """,
}


@pytest.fixture
def fake_peer(tmp_path: Path) -> Path:
    peer = tmp_path / "pytorch-maml-rl"
    for name, source in FAKE_MODULES.items():
        (peer / name).parent.mkdir(parents=True, exist_ok=True)
        (peer / name).write_text(textwrap.dedent(source))
    (peer / "configs" / "maml").mkdir(parents=True)
    (peer / "configs" / "maml" / "2d-navigation.yaml").write_text(PEER_CONFIG)
    return peer


def run_script(peer: Path, *options: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    log = peer / "calls.jsonl"
    log.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "time_pytorch_maml_rl.py"), str(peer), *options],
        capture_output=True, text=True, timeout=120,
        env={"FAKE_PEER_LOG": str(log), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def test_it_times_the_peers_training_loop_with_its_config_and_metarls_network(fake_peer,
                                                                             tmp_path):
    out = tmp_path / "timing.json"
    done, calls = run_script(fake_peer, "--workers", "2", "--iterations", "4", "--warmup",
                             "1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    by_event: dict[str, list[dict]] = {}
    for call in calls:
        by_event.setdefault(call["event"], []).append(call)

    assert by_event["gym.make"][0]["name"] == "2DNavigation-v0"
    assert by_event["gym.make"][0]["kwargs"] == {"low": -0.5, "high": 0.5}
    assert by_event["policy"] == [{"event": "policy", "threads": 1, "hidden_sizes": [100, 100],
                                   "nonlinearity": "relu"}]
    assert by_event["share_memory"] and by_event["baseline"][0]["input_size"] == 2
    # torch 2's removed torch.lstsq, given back in torch 1's order: solves A x = b
    assert by_event["baseline.fit"][0]["coeffs"] == pytest.approx([1.0, 0.5])
    # the workers fork with one thread; the meta-update gets the default back
    default_threads = by_event["import"][0]["threads"]
    assert default_threads == 2
    sampler = by_event["sampler"][0]
    assert sampler["threads"] == 1
    assert sampler["kwargs"] == {"env_kwargs": {"low": -0.5, "high": 0.5}, "batch_size": 20,
                                 "seed": 0, "num_workers": 2}
    assert sampler["given"] == {"policy": "_Policy", "baseline": "LinearFeatureBaseline",
                                "env": "_Env"}
    assert sampler["torch_seed"] == 0
    assert by_event["metalearner"][0]["first_order"] is False
    assert by_event["metalearner"][0]["fast_lr"] == 0.1
    assert by_event["metalearner"][0]["device"] == "cpu"
    assert [c["num_tasks"] for c in by_event["sample_tasks"]] == [20] * 4
    assert all(c["kwargs"] == {"num_steps": 1, "fast_lr": 0.1, "gamma": 0.99,
                               "gae_lambda": 1.0, "device": "cpu"}
               for c in by_event["sample_async"])
    assert len(by_event["step"]) == 4
    for step in by_event["step"]:
        assert step["threads"] == default_threads
        assert step["futures"] == ["train", "valid"]
        assert step["kwargs"] == {"max_kl": 0.01, "cg_iters": 10, "cg_damping": 1e-5,
                                  "ls_max_steps": 15, "ls_backtrack_ratio": 0.8}
    order = [c["event"] for c in calls if c["event"] in ("sample_tasks", "sample_async",
                                                        "step", "sample_wait")]
    assert order == ["sample_tasks", "sample_async", "step", "sample_wait"] * 4
    assert len(by_event["terminate"]) == 2

    lines = done.stdout.splitlines()
    records = [json.loads(line) for line in lines[:4]]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    # iteration i: train lengths 100, 50 + i, 100, 100 and valid 4 x 10
    assert [r["env_steps"] for r in records] == [390 + i for i in range(1, 5)]
    assert records[0]["mean_episode_length"] == pytest.approx(391 / 8)
    seconds = [r["seconds"] for r in records]
    # each iteration's clock covers sampling (3 x 0.1 s) and the meta-update (0.2 s)
    assert all(0.5 <= s < 5.0 for s in seconds)
    assert lines[4].startswith("pytorch-maml-rl, second-order MAML-TRPO, 2 worker(s), "
                               "[100, 100] relu: ")
    assert lines[4].endswith("iterations 2-4)")
    saved = json.loads(out.read_text())
    assert saved["records"] == records
    assert saved["summary"] == pytest.approx(timing.summarize(seconds, 1))
    assert saved["summary"]["iterations"] == 3
    assert (saved["workers"], saved["first_order"]) == (2, False)
    assert (saved["hidden_sizes"], saved["nonlinearity"]) == ([100, 100], "relu")


def test_first_order_and_the_peers_own_network_come_from_the_options(fake_peer):
    done, calls = run_script(fake_peer, "--first-order", "--peer-network", "--iterations",
                             "2", "--warmup", "0", "--seed", "5")
    assert done.returncode == 0, done.stderr
    events = {c["event"]: c for c in calls}
    assert events["metalearner"]["first_order"] is True
    assert (events["policy"]["hidden_sizes"], events["policy"]["nonlinearity"]) == (
        [64, 64], "tanh")
    assert events["sampler"]["kwargs"]["seed"] == 5
    assert events["sampler"]["torch_seed"] == 5
    assert events["sampler"]["kwargs"]["num_workers"] == 1
    assert "first-order MAML-TRPO, 1 worker(s), [64, 64] tanh" in done.stdout


@pytest.mark.parametrize(("options", "message"), [
    (("--iterations", "3", "--warmup", "3"), "--warmup must be at least 0 and below"),
    (("--workers", "0"), "--workers must be at least 1"),
    (("--seed", "-1"), "--seed must be non-negative"),
    (("--json", "/nonexistent-folder/timing.json"), "folder /nonexistent-folder does not exist"),
])
def test_bad_options_exit_2_before_the_peer_runs(fake_peer, options, message):
    done, calls = run_script(fake_peer, *options)
    assert done.returncode == 2
    assert message in done.stderr
    assert calls == []


def test_a_folder_that_is_no_checkout_of_the_peer_exits_2(tmp_path):
    done, _ = run_script(tmp_path / "elsewhere")
    assert done.returncode == 2
    assert "is not a checkout of pytorch-maml-rl" in done.stderr


def test_summary_leaves_out_the_warmup_iterations():
    assert timing.summarize([9.0, 1.0, 2.0, 4.0], 1) == {
        "iterations": 3, "mean_s": pytest.approx(7 / 3), "std_s": pytest.approx((7 / 3) ** 0.5),
        "min_s": 1.0, "max_s": 4.0}
    assert timing.summarize([9.0, 3.0], 1)["std_s"] == 0.0
    with pytest.raises(ValueError, match="nothing to summarize"):
        timing.summarize([1.0, 2.0], 2)


def test_torch_lstsq_is_provided_only_where_torch_has_removed_it():
    matrix = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    rhs = torch.tensor([[1.0], [2.0]], dtype=torch.float64)

    def removed(*_):
        raise RuntimeError("This function was deprecated since version 1.9 and is now removed")

    torch_2 = types.SimpleNamespace(lstsq=removed, eye=torch.eye, linalg=torch.linalg)
    assert timing.provide_torch_lstsq(torch_2) is True
    solution, _ = torch_2.lstsq(rhs, matrix)  # torch 1's order: right-hand side first
    torch.testing.assert_close(solution, torch.linalg.solve(matrix, rhs))

    def working(rhs, matrix):
        return torch.linalg.solve(matrix, rhs), None

    torch_1 = types.SimpleNamespace(lstsq=working, eye=torch.eye, linalg=torch.linalg)
    assert timing.provide_torch_lstsq(torch_1) is False
    assert torch_1.lstsq is working
    assert timing.provide_torch_lstsq(types.SimpleNamespace(eye=torch.eye,
                                                            linalg=torch.linalg)) is True
