"""scripts/time_shared_cores.py: which thread settings its processes get, what it prints,
and its checks of the options (no timing asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from script_modules import SCRIPTS, load_script

shared = load_script("time_shared_cores")
QUICK = ["--set", "training.meta_batch_size=2", "--set", "run.progress=false"]


def test_each_setting_runs_its_copies_together_with_its_own_thread_variables(monkeypatch):
    """The copies start before any is waited for, each with the setting's variables and none
    of the caller's thread variables."""
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    events = []

    class FakeProcess:
        returncode = 0

        def __init__(self, command, env, stdout, text):
            events.append(("start", command, {k: env.get(k) for k in shared.THREAD_VARIABLES}))

        def communicate(self):
            events.append(("wait",))
            return "[0.5, 0.25, 0.75]\n", None

    monkeypatch.setattr(shared.subprocess, "Popen", FakeProcess)
    results = shared.run_copies("sine", ["training.meta_batch_size=2"], 3, 2,
                                shared.SETTINGS["OMP_WAIT_POLICY=PASSIVE"])
    assert results == [[0.5, 0.25, 0.75]] * 2
    assert [e[0] for e in events] == ["start", "start", "wait", "wait"]
    command, variables = events[0][1], events[0][2]
    assert command[-6:] == ["--child", "sine", "--iterations", "3", "--set",
                            "training.meta_batch_size=2"]
    assert variables == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": None,
                         "GOMP_SPINCOUNT": None, "MKL_NUM_THREADS": None}
    assert shared.summary_row("x", 2, results, warmup=1).split() == ["x", "2", "0.500", "0.750"]


def test_the_script_prints_a_row_for_each_setting_alone_and_shared():
    done = subprocess.run([sys.executable, str(SCRIPTS / "time_shared_cores.py"), "sine",
                           "--iterations", "3", "--warmup", "1", *QUICK],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.strip().splitlines()
    assert rows[0].startswith(f"sine: seconds per meta-iteration on {os.cpu_count()} cores, "
                              "2 timed iterations per process")
    settings = [re.split(r"\s{2,}", row.strip())[0] for row in rows[2:]]
    assert settings == [name for name in shared.SETTINGS for _ in (1, 2)]
    assert [row.split()[-3] for row in rows[2:]] == ["1", "2"] * 3
    assert all(float(row.split()[-2]) > 0 for row in rows[2:])


@pytest.mark.parametrize(("args", "message"), [
    (["--copies", "1"], "--copies = 1: give at least 2"),
    (["--iterations", "2", "--warmup", "2"], "--iterations = 2 must exceed --warmup = 2"),
    (["--warmup", "-1"], "must exceed --warmup = -1 (>= 0)"),
])
def test_bad_options_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        shared.main(["sine", *args])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_config_is_reported_before_any_process_starts(monkeypatch, capsys):
    monkeypatch.setattr(shared.subprocess, "Popen", lambda *a, **k: pytest.fail("started"))
    assert shared.main(["sine", "--set", "training.colour=red"]) == 2
    assert "unknown key training.colour" in capsys.readouterr().err
