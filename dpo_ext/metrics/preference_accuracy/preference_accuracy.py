"""Preference accuracy: how often a reward model scores the chosen response strictly above the rejected one."""

import datasets
import evaluate

_DESCRIPTION = """
Fraction of preference pairs whose chosen response gets a strictly higher reward than the rejected response. A tie
counts as wrong, as in RewardBench (Lambert et al., 2024), which reports this accuracy for DPO models scored with
their implicit reward r(x, y) = beta * log pi(y|x) / pi_ref(y|x) (Rafailov et al., 2023, section 5.1).
"""

_KWARGS_DESCRIPTION = """
Args:
    chosen_rewards (`list` of `float`): reward of each pair's chosen (preferred) response.
    rejected_rewards (`list` of `float`): reward of each pair's rejected response, in the same order.
Returns:
    accuracy (`float`): fraction of pairs with chosen_reward > rejected_reward, in [0, 1].
Examples:
    >>> metric = evaluate.load("path/to/dpo_ext/metrics/preference_accuracy")
    >>> metric.compute(chosen_rewards=[1.0, 0.5, 2.0], rejected_rewards=[0.0, 0.5, 3.0])
    {'accuracy': 0.3333333333333333}
"""

_CITATION = """
@article{lambert2024rewardbench,
  title={RewardBench: Evaluating Reward Models for Language Modeling},
  author={Lambert, Nathan and others},
  journal={arXiv preprint arXiv:2403.13787},
  year={2024}
}
@inproceedings{rafailov2023direct,
  title={Direct Preference Optimization: Your Language Model is Secretly a Reward Model},
  author={Rafailov, Rafael and Sharma, Archit and Mitchell, Eric and Ermon, Stefano and Manning, Christopher D.
          and Finn, Chelsea},
  booktitle={NeurIPS},
  year={2023}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PreferenceAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"chosen_rewards": datasets.Value("float64"), "rejected_rewards": datasets.Value("float64")}
            ),
            reference_urls=["https://arxiv.org/abs/2403.13787", "https://arxiv.org/abs/2305.18290"],
        )

    def _compute(self, chosen_rewards, rejected_rewards):
        if len(chosen_rewards) == 0:
            raise ValueError("preference_accuracy needs at least one pair")
        wins = sum(1 for chosen, rejected in zip(chosen_rewards, rejected_rewards) if chosen > rejected)
        return {"accuracy": wins / len(chosen_rewards)}
