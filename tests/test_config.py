"""Configs: shipped YAMLs mirror the dataclasses; bad input is rejected with its key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from script_modules import load_script

from metarl.cli import builtin_configs
from metarl.config import ConfigError, apply_overrides, dump_config, from_dict, to_dict
from metarl.experiment import config_from_data, load_config
from metarl.supervised.sine_experiment import SineConfig


def _keys(obj, prefix=""):
    keys = set()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys |= _keys(value, f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def _yaml_keys(data, prefix=""):
    keys = set()
    for k, v in data.items():
        if isinstance(v, dict):
            keys |= _yaml_keys(v, f"{prefix}{k}.")
        else:
            keys.add(prefix + k)
    return keys


@pytest.mark.parametrize("name", sorted(builtin_configs()))
def test_shipped_configs_load_and_mirror_every_field(name):
    path = builtin_configs()[name]
    experiment, config = load_config(path)
    assert experiment.name == config.experiment
    assert _yaml_keys(yaml.safe_load(path.read_text())) == _keys(config)
    text = path.read_text()
    leaves = [line for line in text.splitlines()
              if line.strip() and not line.lstrip().startswith("#") and not line.endswith(":")]
    assert all("  # " in line for line in leaves), "every value carries its meaning"


def test_shipped_configs_are_what_write_configs_writes():
    """configs/ is regenerated from scripts/write_configs.py; a hand edit there would be lost
    on the next regeneration, so every file must equal what the script writes."""
    module = load_script("write_configs")
    for relative, (header, data) in module.PRESETS.items():
        _, config = config_from_data(data)
        assert (module.ROOT / relative).read_text() == dump_config(config, header=header), relative
    assert len(module.PRESETS) == len(builtin_configs())


def test_write_configs_writes_every_preset_and_check_names_what_differs(tmp_path, monkeypatch,
                                                                        capsys):
    """`--check` writes nothing and exits 1 naming each missing or hand-edited file; a plain
    run writes them all; the script finds configs/ from its own place, not the working
    directory."""
    module = load_script("write_configs")
    shipped = Path(__file__).resolve().parents[1] / "configs"
    assert shipped == module.ROOT
    monkeypatch.setattr(module, "ROOT", tmp_path)
    assert module.main(["--check"]) == 1
    assert capsys.readouterr().out.count("differs: ") == len(module.PRESETS)
    assert not any(tmp_path.iterdir())
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0 and "differs" not in capsys.readouterr().out
    edited = tmp_path / next(iter(module.PRESETS))
    original = edited.read_text()
    edited.write_text(original.replace("seed: 0", "seed: 1"))
    assert module.main(["--check"]) == 1
    assert capsys.readouterr().out.strip().splitlines() == [f"differs: {edited}"]
    assert module.main([]) == 0 and edited.read_text() == original


def test_dump_and_load_round_trip():
    config = from_dict(SineConfig, {"adaptation": {"method": "reptile", "inner_steps": 5},
                                    "evaluation": {"shots": [5]}})
    again = from_dict(SineConfig, yaml.safe_load(dump_config(config)))
    assert to_dict(again) == to_dict(config)


@pytest.mark.parametrize(("data", "message"), [
    ({"training": {"iteratons": 5}}, "unknown key training.iteratons"),
    ({"bogus": 1}, "unknown key bogus"),
    ({"training": {"outer_lr": -0.1}}, r"training.outer_lr = -0.1: must be > 0"),
    ({"training": {"meta_batch_size": 0}}, r"training.meta_batch_size = 0: must be >= 1"),
    ({"training": {"iterations": "many"}}, "training.iterations = 'many': expected an integer"),
    ({"training": {"iterations": 2.5}}, "expected an integer"),
    ({"training": {"iterations": 1e30}}, r"training.iterations = 1e\+30: expected an integer; a "
                                         "float this large is not exact"),
    ({"adaptation": {"method": "sgd"}}, "allowed values are 'maml', 'fomaml', 'reptile'"),
    ({"adaptation": {"method": "reptile", "learn_inner_lr": True}}, "learn_inner_lr"),
    ({"task": {"amplitude_min": 3.0, "amplitude_max": 1.0}}, "amplitude_min = 3.0 must be <="),
    ({"model": {"hidden_sizes": [40, 0]}}, r"model.hidden_sizes\[1\] = 0: must be >= 1"),
    ({"evaluation": {"shots": 5}}, "expected a list of integers"),
    ({"evaluation": {"shots": []}}, r"evaluation.shots = \[\]: give at least 1 value"),
    ({"evaluation": {"inner_lr": "abc"}}, "evaluation.inner_lr = 'abc': expected a number or "
                                           "null"),
    ({"task": {"amplitude_min": 6.0}}, "^task.amplitude_min = 6.0 must be <= amplitude_max"),
    ({"adaptation": {"bogus": 1}}, "^unknown key adaptation.bogus; allowed keys in adaptation: "
                                   "method, "),
    ({"run": {"progress": "yes"}}, "expected true or false"),
    ({"training": 3}, "expected a mapping"),
    ({"evaluation": {"inner_lr": 0}}, "must be > 0"),
])
def test_bad_values_name_the_key_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(SineConfig, data)


def test_unknown_experiment_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"known experiments are .*sine"):
        config_from_data({"experiment": "chess"})
    with pytest.raises(ConfigError, match="missing required key experiment"):
        config_from_data({})


def test_overrides_parse_yaml_values_and_nest():
    data = apply_overrides({"training": {"iterations": 5}},
                           ["training.iterations=7", "evaluation.shots=[5, 10]",
                            "adaptation.method=fomaml", "evaluation.inner_lr=null"])
    assert data == {"training": {"iterations": 7}, "adaptation": {"method": "fomaml"},
                    "evaluation": {"shots": [5, 10], "inner_lr": None}}
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["training.iterations"])


def test_integers_are_accepted_where_floats_are_expected():
    config = from_dict(SineConfig, {"training": {"outer_lr": 1}})
    assert config.training.outer_lr == 1.0 and isinstance(config.training.outer_lr, float)


def test_navigation_accepts_the_cheetah_options_at_their_defaults():
    """The MuJoCo-only options are refused on navigation only when they change something."""
    defaults = {"frame_skip": None, "observe_x_position": False,
                "observe_centre_of_mass": False, "reward_velocity": "torso", "reset_noise": "v5"}
    _, config = config_from_data({"experiment": "meta_rl",
                                  "env": {"name": "navigation2d", **defaults},
                                  "evaluation": {"reset_noise": None}})
    assert config.env.reset_noise == "v5"
    with pytest.raises(ConfigError, match=r"env\.observe_x_position = true: navigation2d has "
                       r"no torso; it applies to the MuJoCo families .*; leave it false"):
        config_from_data({"experiment": "meta_rl",
                          "env": {"name": "navigation2d", "observe_x_position": True}})


def test_yaml_reads_exponent_numbers_and_refuses_duplicate_keys(tmp_path):
    """PyYAML alone reads 1e-3 as a string and lets a repeated key replace the first."""
    path = tmp_path / "c.yaml"
    path.write_text("experiment: sine\ntraining:\n  outer_lr: 1e-3\n  iterations: 2e3\n")
    _, config = load_config(path, ["adaptation.inner_lr=5E-2"])
    assert config.training.outer_lr == 0.001 and config.adaptation.inner_lr == 0.05
    assert config.training.iterations == 2000 and isinstance(config.training.iterations, int)
    path.write_text("experiment: sine\ntraining: {iterations: 5}\ntraining: {outer_lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"key training is given twice in one mapping "
                                          r"\(lines 2 and 3\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="given twice"):
        apply_overrides({}, ["evaluation.shots={a: 1, a: 2}"])


@pytest.mark.parametrize(("data", "message"), [
    ({"task": {"amplitude_min": 0}}, r"^task.amplitude_min = 0.0: must be > 0$"),
    ({"task": {"support_shots": 0}}, r"^task.support_shots = 0: must be >= 1$"),
    ({"evaluation": {"tasks": 1}}, r"^evaluation.tasks = 1: must be >= 2$"),
    ({"evaluation": {"shots": [5, 10, 5]}}, r"evaluation.shots = \[5, 10, 5\]: give each K once"),
    ({"adaptation": {"inner_steps": 0}}, r"^adaptation.inner_steps = 0: must be >= 1$"),
    ({"run": {"checkpoint_every": 0}}, r"^run.checkpoint_every = 0: must be >= 1$"),
    ({"training": {"iterations": True}}, r"training.iterations = True: expected an integer"),
    ({"training": {"outer_lr": True}}, r"training.outer_lr = True: expected a number"),
    ({"training": {"outer_lr": float("inf")}}, r"training.outer_lr = inf: expected a finite"),
    ({"training": {"outer_lr": float("nan")}}, r"training.outer_lr = nan: expected a finite"),
    ({"run": {"progress": 1}}, r"run.progress = 1: expected true or false"),
    ({"_comment": "x"}, r"^unknown key _comment; allowed keys: experiment, seed, "),
])
def test_more_bad_sine_values_name_the_key_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(SineConfig, data)


def _meta_rl(**sections):
    return config_from_data({"experiment": "meta_rl", **sections})


@pytest.mark.parametrize(("data", "message"), [
    ({"training": {"discount": 1.5}}, r"^training.discount = 1.5: must be <= 1$"),
    ({"training": {"gae_lambda": 1.01}}, r"^training.gae_lambda = 1.01: must be <= 1$"),
    ({"trpo": {"backtrack_ratio": 1.0}}, r"^trpo.backtrack_ratio = 1.0: must be < 1$"),
    ({"trpo": {"max_kl": 0}}, r"^trpo.max_kl = 0.0: must be > 0$"),
    ({"adaptation": {"inner_steps": 0}}, r"^adaptation.inner_steps = 0: must be >= 1$"),
    ({"evaluation": {"tasks": 1}}, r"^evaluation.tasks = 1: must be >= 2$"),
    ({"env": {"name": "half_cheetah_vel"}, "evaluation": {"test_velocities": [0.1, 0.5, 0.8]}},
     r"give \[low, high\] with low < high"),
    ({"env": {"name": "half_cheetah_vel"}, "evaluation": {"test_velocities": [0.5, 0.5]}},
     r"give \[low, high\] with low < high"),
    ({"env": {"name": "navigation2d", "reward_velocity": "centre_of_mass"}},
     r"env.reward_velocity = centre_of_mass: navigation2d has no torso"),
    ({"env": {"name": "navigation2d"}, "evaluation": {"reset_noise": "rllab"}},
     r"evaluation.reset_noise = rllab: navigation2d starts every episode at its origin"),
])
def test_bad_meta_rl_values_name_the_key_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError, match=message):
        _meta_rl(**data)


def test_override_values_may_hold_an_equals_sign_and_keys_must_be_sections():
    from metarl.config import apply_overrides, parse_override

    assert parse_override("data.root=/data/a=b") == (["data", "root"], "/data/a=b")
    with pytest.raises(ConfigError, match=r"override 'training\.iterations\.x=1': iterations is "
                                          r"not a section"):
        apply_overrides({"training": {"iterations": 5}}, ["training.iterations.x=1"])


def test_a_string_that_yaml_reads_as_a_mapping_says_to_quote_it():
    data = apply_overrides({"experiment": "omniglot"}, ["device=cuda:"])
    with pytest.raises(ConfigError, match=r"^device = \{'cuda': None\}: expected a string; YAML "
                                          r"reads 'cuda:' as a mapping, so quote the string"):
        config_from_data(data)
    data = apply_overrides({"experiment": "omniglot"}, ["data.root=a: b"])
    with pytest.raises(ConfigError, match=r"^data.root = \{'a': 'b'\}: expected a string or "
                                          r"null; YAML reads 'a: b' as a mapping"):
        config_from_data(data)
    with pytest.raises(ConfigError, match=r"^device = \{'a': 1, 'b': 2\}: expected a string$"):
        config_from_data({"experiment": "omniglot", "device": {"a": 1, "b": 2}})
