"""recipes/recipe_kit/frontier.py: reward interpolated at fixed KL, the envelope over betas, and the seeds tables.

Expected values are worked out by hand in each docstring. A curve is written ``[(kl, reward), ...]`` here and turned
into the checkpoint dicts of ``eval_results.json`` by `curve`.
"""

import bisect
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes"))  # recipe_kit (recipes/ is no package)

from recipe_kit import frontier  # noqa: E402


def curve(*points):
    return [{"step": 10 * (i + 1), "reward": r, "reward_sem": 0.01, "kl": kl, "kl_sem": 0.1, "num_samples": 64}
            for i, (kl, r) in enumerate(points)]


def test_reward_is_interpolated_between_the_bracketing_points():
    """Path (0, 0.5) -> (2, 0.7) -> (6, 0.9). KL 1: halfway along the first segment, 0.5 + 0.5 * 0.2 = 0.6.
    KL 5: 3/4 of the way from KL 2 to 6, 0.7 + 0.75 * 0.2 = 0.85. KL 6: the last point, 0.9. KL 0: SFT, 0.5."""
    points = curve((2.0, 0.7), (6.0, 0.9))
    assert frontier.reward_at_kl(points, 0.5, 1.0) == pytest.approx(0.6)
    assert frontier.reward_at_kl(points, 0.5, 5.0) == pytest.approx(0.85)
    assert frontier.reward_at_kl(points, 0.5, 6.0) == pytest.approx(0.9)
    assert frontier.reward_at_kl(points, 0.5, 0.0) == 0.5


def test_a_kl_the_path_never_reaches_gives_none():
    """The path ends at KL 6: KL 7 is never reached; a run with no checkpoints reaches only KL 0."""
    assert frontier.reward_at_kl(curve((2.0, 0.7), (6.0, 0.9)), 0.5, 7.0) is None
    assert frontier.reward_at_kl([], 0.5, 1.0) is None


def test_a_path_crossing_the_kl_twice_uses_the_first_crossing():
    """Path (0, 0.5) -> (4, 0.9) -> (1, 0.8) -> (5, 1.0) crosses KL 2 three times. First segment: 0.5 + (2/4) * 0.4
    = 0.7 (the second crossing would give 0.9 - (2/3) * 0.1 = 0.833, the third 0.8 + (1/4) * 0.2 = 0.85)."""
    points = curve((4.0, 0.9), (1.0, 0.8), (5.0, 1.0))
    assert frontier.reward_at_kl(points, 0.5, 2.0) == pytest.approx(0.7)


def test_segments_of_constant_kl_divide_by_nothing():
    """A checkpoint at KL 0, then (1, 0.8): KL 0.5 is halfway along the second segment, 0.6 + 0.5 * 0.2 = 0.7.
    Two checkpoints at KL 2 (0.7, then 0.8): KL 2 is first reached at the first, 0.7."""
    assert frontier.reward_at_kl(curve((0.0, 0.6), (1.0, 0.8)), 0.5, 0.5) == pytest.approx(0.7)
    assert frontier.reward_at_kl(curve((2.0, 0.7), (2.0, 0.8)), 0.5, 2.0) == pytest.approx(0.7)


def test_a_negative_kl_estimate_is_a_point_on_the_path_like_any_other():
    """Path (0, 0.5) -> (-0.5, 0.55) -> (1.5, 0.75). KL 1: the first segment spans [-0.5, 0] and misses it; the
    second goes from -0.5 to 1.5, 1.5/2 = 0.75 of the way: 0.55 + 0.75 * 0.2 = 0.70. KL -0.25: halfway along the
    first segment, 0.5 + 0.5 * 0.05 = 0.525."""
    points = curve((-0.5, 0.55), (1.5, 0.75))
    assert frontier.reward_at_kl(points, 0.5, 1.0) == pytest.approx(0.70)
    assert frontier.reward_at_kl(points, 0.5, -0.25) == pytest.approx(0.525)


def test_a_checkpoint_without_kl_is_refused_with_its_index():
    with pytest.raises(ValueError, match="checkpoint 1"):
        frontier.reward_at_kl([{"kl": 1.0, "reward": 0.6}, {"reward": 0.7}], 0.5, 2.0)


RUNS = {
    "dpo_beta0.5": {"method": "dpo", "beta": 0.5, "checkpoints": curve((1.0, 0.6), (4.0, 0.9))},
    "dpo_beta1": {"method": "dpo", "beta": 1.0, "checkpoints": curve((2.0, 0.8), (3.0, 0.85))},
    "rloo_beta0.05": {"method": "rloo", "beta": 0.05, "checkpoints": curve((1.0, 0.99))},
}


def test_envelope_takes_the_better_beta_at_each_kl():
    """SFT reward 0.5. KL 2: beta 0.5 gives 0.6 + (1/3) * 0.3 = 0.7, beta 1 gives 0.8: beta 1 wins. KL 0.5: beta 0.5
    gives 0.5 + 0.5 * 0.1 = 0.55, beta 1 gives 0.5 + 0.25 * 0.3 = 0.575: beta 1 wins. KL 3.5: only beta 0.5 reaches
    it, 0.6 + (2.5/3) * 0.3 = 0.85. KL 5: neither. The RLOO run (reward 0.99) is another method's."""
    assert frontier.envelope_at_kl(RUNS, "dpo", 0.5, 2.0) == {"reward": pytest.approx(0.8), "run": "dpo_beta1"}
    assert frontier.envelope_at_kl(RUNS, "dpo", 0.5, 0.5) == {"reward": pytest.approx(0.575), "run": "dpo_beta1"}
    assert frontier.envelope_at_kl(RUNS, "dpo", 0.5, 3.5) == {"reward": pytest.approx(0.85), "run": "dpo_beta0.5"}
    assert frontier.envelope_at_kl(RUNS, "dpo", 0.5, 5.0) is None
    assert frontier.method_table(RUNS, 0.5, (2.0, 5.0)) == {"dpo": {2.0: pytest.approx(0.8), 5.0: None},
                                                            "rloo": {2.0: None, 5.0: None}}


def test_one_seed_budget_view_fixed_kl_view_and_their_differences_by_hand():
    """SFT 0.5. Method a: beta 1 through (0.5, 0.6), (3, 0.8); beta 2 through (1.5, 0.7). Method b: (0.8, 0.55).
    Budget KL <= 1: a's best is 0.6 (beta 1, step 10), b's 0.55: a - b = 0.05 +- sqrt(0.01^2 + 0.01^2) = 0.0141.
    Budget KL <= 2: a's best is 0.7 (beta 2): a - b = 0.15. Fixed KL 1: beta 1 at 0.6 + (0.5 / 2.5) * 0.2 = 0.64,
    beta 2 at 0.5 + (1 / 1.5) * 0.2 = 0.6333: a reads 0.64 (beta 1); b never reaches KL 1: no difference."""
    runs = {"a_beta1": {"method": "a", "checkpoints": curve((0.5, 0.6), (3.0, 0.8))},
            "a_beta2": {"method": "a", "checkpoints": curve((1.5, 0.7))},
            "b_beta1": {"method": "b", "checkpoints": curve((0.8, 0.55))}}
    budgets = frontier.budget_table(runs, budgets=(1.0, 2.0))
    assert budgets["a"]["kl<=1"] == {"reward": 0.6, "reward_sem": 0.01, "kl": 0.5, "run": "a_beta1", "step": 10}
    assert budgets["a"]["kl<=2"]["run"] == "a_beta2" and budgets["b"]["kl<=2"]["reward"] == 0.55
    differences = frontier.budget_differences(budgets, [("a", "b"), ("a", "c")])
    assert differences == {"a-b": {"kl<=1": {"difference": 0.05, "sem": 0.0141},
                                   "kl<=2": {"difference": 0.15, "sem": 0.0141}}}
    fixed, fixed_differences = frontier.fixed_kl_tables(runs, 0.5, [1.0], [("a", "b")])
    assert fixed == {"a": {"kl=1": {"reward": 0.64, "run": "a_beta1"}}, "b": {"kl=1": None}}
    assert fixed_differences == {"a-b": {"kl=1": None}}


def test_seed_table_mean_and_standard_error_by_hand():
    """Seeds 0, 1, 2 give 0.80, 0.83, 0.86: mean 0.83; deviations -0.03, 0, 0.03, sample variance 0.0018 / 2 =
    0.0009, sd 0.03, s.e. 0.03 / sqrt(3) = 0.01732. Seed 3 did not reach KL 2: n = 3. At KL 4 only seed 0: mean
    0.9, no s.e."""
    tables = {0: {"dpo": {2.0: 0.80, 4.0: 0.9}}, 1: {"dpo": {2.0: 0.83, 4.0: None}},
              2: {"dpo": {2.0: 0.86, 4.0: None}}, 3: {"dpo": {2.0: None, 4.0: None}}}
    cell = frontier.seed_table(tables, (2.0, 4.0))["dpo"]
    assert cell[2.0]["mean"] == pytest.approx(0.83)
    assert cell[2.0]["sem"] == pytest.approx(0.0173205, abs=1e-6)
    assert cell[2.0]["n"] == 3
    assert cell[2.0]["values"] == {0: 0.80, 1: 0.83, 2: 0.86, 3: None}
    assert (cell[4.0]["mean"], cell[4.0]["sem"], cell[4.0]["n"]) == (pytest.approx(0.9), None, 1)


# pl_dpo - dpo per seed: 0.02, 0.03, 0.07 (seed 3: dpo never reached KL 2, left out).
PAIRED = {0: {"pl_dpo": {2.0: 0.82, 6.0: 0.95}, "dpo": {2.0: 0.80, 6.0: None}},
          1: {"pl_dpo": {2.0: 0.83, 6.0: 0.94}, "dpo": {2.0: 0.80, 6.0: 0.90}},
          2: {"pl_dpo": {2.0: 0.87, 6.0: None}, "dpo": {2.0: 0.80, 6.0: None}},
          3: {"pl_dpo": {2.0: 0.90, 6.0: None}, "dpo": {2.0: None, 6.0: None}}}


def test_paired_differences_with_a_t_interval_by_hand():
    """Differences 0.02, 0.03, 0.07: mean 0.04; deviations -0.02, -0.01, 0.03, variance 0.0014 / 2 = 0.0007, s.e.
    sqrt(0.0007 / 3) = 0.015275; t(0.975, 2 df) = 4.303, half-width 4.303 * 0.015275 = 0.065729, interval
    [-0.025729, 0.105729]. Seed 3 has no dpo value: n = 3."""
    cell = frontier.paired_differences(PAIRED, [("pl_dpo", "dpo")], (2.0, 6.0))["pl_dpo-dpo"][2.0]
    assert cell["n"] == 3
    assert cell["mean"] == pytest.approx(0.04)
    assert cell["sem"] == pytest.approx(0.015275, abs=1e-6)
    assert cell["half_width"] == pytest.approx(0.065729, abs=1e-5)
    assert cell["interval"] == (pytest.approx(-0.025729, abs=1e-5), pytest.approx(0.105729, abs=1e-5))


def test_one_paired_seed_gives_a_mean_and_no_interval():
    """KL 6: only seed 1 has both, 0.94 - 0.90 = 0.04; one seed says nothing about the spread."""
    cell = frontier.paired_differences(PAIRED, [("pl_dpo", "dpo")], (6.0,))["pl_dpo-dpo"][6.0]
    assert (cell["n"], cell["mean"]) == (1, pytest.approx(0.04))
    assert cell["sem"] is None and cell["interval"] is None and cell["half_width"] is None


def test_t_quantiles():
    """Table values: 12.706 (1 df), 4.303 (2 df), 2.042 (30 df); beyond, t(0.975, 60) = 2.000 from tables."""
    assert [frontier.t_975(df) for df in (1, 2, 30)] == [12.706, 4.303, 2.042]
    assert frontier.t_975(60) == pytest.approx(2.000, abs=5e-4)


def test_markdown_cells():
    """The tables of PAIRED. pl_dpo at KL 2, 4 seeds 0.82, 0.83, 0.87, 0.90: mean 0.855, deviations -0.035, -0.025,
    0.015, 0.045, variance 0.0041 / 3 = 0.0013667, s.e. sqrt(0.0013667 / 4) = 0.018 -> "0.855 +- 0.018"; at KL 6,
    seeds 0, 1 (0.95, 0.94): mean 0.945, sd sqrt(0.00005) = 0.00707, s.e. 0.005, "(n=2)" as 2 of 4 seeds reached it.
    dpo at KL 2: 0.80 three times, s.e. 0; at KL 6 one seed, "0.900 (n=1)". The differences are those of the two
    tests above; "-" where a seed has no value."""
    kls = (2.0, 6.0)
    text = frontier.markdown_seed_tables(frontier.seed_table(PAIRED, kls),
                                         frontier.paired_differences(PAIRED, [("pl_dpo", "dpo")], kls), kls,
                                         labels={"pl_dpo": "PL-DPO", "dpo": "DPO"})
    lines = text.splitlines()
    assert "| method | KL 2 | KL 6 |" in lines
    assert "| PL-DPO | 0.855 +- 0.018 | 0.945 +- 0.005 (n=2) |" in lines
    assert "| DPO | 0.800 +- 0.000 (n=3) | 0.900 (n=1) |" in lines
    assert "| PL-DPO - DPO | +0.040 +- 0.015 [-0.026, +0.106] | +0.040 (n=1, no interval) |" in lines
    assert "| DPO, seed 3 | - | - |" in lines
    assert "| PL-DPO, seed 2 | 0.870 | - |" in lines


@given(slope=st.floats(-0.2, 0.2), step=st.floats(0.1, 3.0), count=st.integers(1, 6), where=st.floats(0.0, 1.0))
def test_a_straight_line_curve_returns_the_line(slope, step, count, where):
    """Checkpoints on the line reward = 0.5 + slope * KL at KL step, 2 step, ...: any KL up to the last point gives
    the line's value, and past it nothing."""
    points = curve(*[(step * i, 0.5 + slope * step * i) for i in range(1, count + 1)])
    kl = where * step * count
    assert frontier.reward_at_kl(points, 0.5, kl) == pytest.approx(0.5 + slope * kl, abs=1e-9)
    assert frontier.reward_at_kl(points, 0.5, step * count * 1.01 + 1e-6) is None


@given(st.lists(st.tuples(st.floats(0.01, 10.0), st.floats(0.0, 1.0)), min_size=1, max_size=8),
       st.floats(0.0, 1.0))
def test_on_a_rightward_path_the_reward_lies_between_the_bracketing_rewards(points, where):
    """KL increasing along the path (sorted distinct KLs): the points bracketing a reached KL are found by bisection,
    and the interpolated reward lies between their rewards."""
    points = sorted(dict(points).items())
    path = [(0.0, 0.5), *points]
    kl = where * path[-1][0]
    reward = frontier.reward_at_kl(curve(*points), 0.5, kl)
    high = max(1, bisect.bisect_left([k for k, _ in path], kl))
    (_, r_a), (_, r_b) = path[high - 1], path[high]
    assert min(r_a, r_b) - 1e-9 <= reward <= max(r_a, r_b) + 1e-9


def test_a_difference_that_rounds_to_zero_is_printed_without_a_minus_sign():
    """-0.0004 rounds to 0.000 at three decimals: printed '+0.000', not '-0.000'; -0.0006 stays '-0.001'."""
    assert frontier._signed(-0.0004) == "+0.000" and frontier._signed(-0.0006) == "-0.001"
    assert frontier._signed(0.0126) == "+0.013"
