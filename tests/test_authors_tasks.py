"""The MAML authors' test tasks (evaluation.task_draw: maml_authors)."""

import numpy as np
import pytest

from metarl.rl.authors_tasks import maml_authors_test_tasks


def test_velocities_are_the_legacy_draw_of_seed_1():
    # np.random.seed(1); np.random.uniform(0, 2, size=40): MT19937's first doubles of seed 1
    # are 0.417022004702574, 0.7203244934421581, 0.00011437481734488664
    tasks = maml_authors_test_tasks("half_cheetah_vel", 40)
    velocities = [task["velocity"] for task in tasks]
    assert velocities[:3] == pytest.approx([0.834044009405148, 1.4406489868843162,
                                            0.00022874963468977327], abs=1e-12)
    assert len(velocities) == 40 and all(0 <= v < 2 for v in velocities)
    assert np.mean(velocities) == pytest.approx(0.918544841151635, abs=1e-12)


def test_directions_run_backward_below_1():
    velocities = [t["velocity"] for t in maml_authors_test_tasks("half_cheetah_vel", 40)]
    directions = [t["direction"] for t in maml_authors_test_tasks("half_cheetah_dir", 40)]
    assert directions == [-1.0 if v < 1 else 1.0 for v in velocities]
    assert directions[:3] == [-1.0, 1.0, -1.0]
    assert directions.count(1.0) == 18 and directions.count(-1.0) == 22


def test_navigation_goals():
    goals = np.array([t["goal"] for t in maml_authors_test_tasks("navigation2d", 40)])
    assert goals.shape == (40, 2) and np.abs(goals).max() <= 0.5
    np.testing.assert_allclose(goals[:2], [[-0.082977995297426, 0.2203244934421581],
                                           [-0.49988562518265513, -0.19766742736816023]],
                               atol=1e-12)


@pytest.mark.parametrize("name", ["navigation2d", "half_cheetah_vel", "half_cheetah_dir"])
def test_fewer_tasks_are_the_first_ones(name):
    few, many = maml_authors_test_tasks(name, 3), maml_authors_test_tasks(name, 40)
    for a, b in zip(few, many[:3], strict=True):
        assert {k: np.asarray(v).tolist() for k, v in a.items()} == {
            k: np.asarray(v).tolist() for k, v in b.items()}


def test_leaves_numpys_global_generator_alone():
    np.random.seed(5)
    expected = np.random.random(3)
    np.random.seed(5)
    maml_authors_test_tasks("half_cheetah_vel", 40)
    np.testing.assert_array_equal(np.random.random(3), expected)


def test_unknown_family():
    with pytest.raises(ValueError, match="known for navigation2d"):
        maml_authors_test_tasks("omniglot", 3)


def test_config_picks_them_for_every_seed():
    from metarl.experiment import config_from_data
    from metarl.rl.build import sample_test_tasks
    from metarl.rl.experiment import parse_task

    _, config = config_from_data({"experiment": "meta_rl", "env": {"name": "half_cheetah_vel"},
                                  "evaluation": {"task_draw": "maml_authors"}})
    authors = maml_authors_test_tasks("half_cheetah_vel", 40)
    assert sample_test_tasks(config, 40, 7) == authors
    assert sample_test_tasks(config, 40, 1_000_003) == authors
    assert parse_task(config, "5", 7) == authors[5]  # render --task 5: evaluate's task 5
    _, seeded = config_from_data({"experiment": "meta_rl", "env": {"name": "half_cheetah_vel"}})
    assert sample_test_tasks(seeded, 40, 7) != authors


@pytest.mark.parametrize(("evaluation", "message"), [
    ({"task_draw": "maml_authors", "test_velocities": [0.1, 0.8]}, "set one of them"),
    ({"task_draw": "authors"}, "maml_authors"),
])
def test_config_rejects_bad_task_draws(evaluation, message):
    from metarl.config import ConfigError
    from metarl.experiment import config_from_data

    with pytest.raises(ConfigError, match=message):
        config_from_data({"experiment": "meta_rl", "env": {"name": "half_cheetah_vel"},
                          "evaluation": evaluation})
