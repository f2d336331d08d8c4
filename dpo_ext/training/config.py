"""PLDPOConfig: the training arguments of PLDPOTrainer."""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from dpo_ext.data.tokenize import check_length_settings
from dpo_ext.reference import REFERENCE_CHOICES
from dpo_ext.reference.cache import cache_folder_problem
from dpo_ext.settings import SettingError, as_number, check_numeric_fields, positive

LOSS_TYPES = ("plackett_luce", "all_pairs", "lipo_lambda", "preferred_ft", "unlikelihood")


@dataclass
class PLDPOConfig(TrainingArguments):
    r"""Configuration for [`PLDPOTrainer`]: `transformers.TrainingArguments` plus the preference-training fields.

    Defaults differ from `TrainingArguments` where DPO practice differs: `learning_rate=1e-6` (the DPO paper's),
    `logging_steps=10` (as TRL), and `remove_unused_columns=False` (the tokenized columns are not model inputs).

    Parameters:
        beta (`float`, defaults to `0.1`): KL-penalty coefficient; rewards are beta * log(pi / pi_ref).
        loss_type (`str`, defaults to `"plackett_luce"`): `"plackett_luce"` (DPO generalised to K ranked completions;
            K = 2 is exactly sigmoid DPO), `"all_pairs"` (sigmoid DPO averaged over every strictly ordered pair of
            the list), `"lipo_lambda"` (LiPO-lambda: pairs weighted by LambdaLoss weights from the rows' `scores`,
            or from their ranks, see `dpo_ext.losses.lipo_lambda_loss`), `"preferred_ft"` (SFT on the best
            completion), or `"unlikelihood"` (best completion up, worst completion's tokens down, weighted by
            `unlikelihood_alpha`).
        unlikelihood_alpha (`float`, defaults to `1.0`): weight of the unlikelihood term.
        max_length (`int` or `None`, defaults to `1024`): maximum tokens of prompt + completion; longer sequences
            lose their end, and rows whose prompt alone reaches it are dropped (with a logged count).
        max_prompt_length (`int`, *optional*): where a prompt and its longest completion exceed `max_length`, the
            prompt keeps its last `max_prompt_length` tokens (it is cut from the left once, when the rows are
            prepared: `dpo_ext.data.tokenize.keep_prompt_end`), so no row is dropped for a long prompt. The DPO
            paper's code does this for Anthropic HH (256 with `max_length` 512). Must be below `max_length`.
            `None`: prompts are never cut.
        reference (`str`, defaults to `"auto"`): where the reference policy comes from: `"auto"`,
            `"disabled_adapters"`, `"adapter_copy"`, `"ref_model"`, `"initial_policy"` or `"base_model"` (the base
            with adapters disabled even when the adapter was loaded already trained: continuing against the
            original base, as on-policy rounds do) (see `dpo_ext.reference`).
        precompute_ref_log_probs (`bool`, defaults to `False`): compute reference log-probs once, before training,
            and store them as a `ref_logps` column.
        precompute_ref_batch_size (`int`, *optional*): batch size of that pass (defaults to the eval batch size).
        ref_cache_dir (`str`, *optional*): a folder that keeps precomputed reference log-probs between runs, each
            dataset's tied to a fingerprint of what produced them (`dpo_ext.reference.cache`): reused when the
            fingerprint matches, refused naming what changed when it does not. Needs `precompute_ref_log_probs`.
        disable_dropout (`bool`, defaults to `True`): turn dropout off in the policy and reference.
        dataset_num_proc (`int`, *optional*): processes used to tokenize the datasets.
        prefix_sharing (`bool`, defaults to `False`): process each prompt once per list of K completions (one
            packed row per list with a block attention mask); models where that is not verified exact fall back
            to K rows with one warning (see `dpo_ext.modeling.support`).
    """

    learning_rate: float = field(default=1e-6, metadata={"help": "Initial learning rate (the DPO paper uses 1e-6)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the tokenized preference columns are not model inputs."}
    )
    beta: float = field(default=0.1, metadata={"help": "KL-penalty coefficient beta; rewards are beta*log(pi/pi_ref)."})
    loss_type: str = field(
        default="plackett_luce",
        metadata={"help": "Loss: plackett_luce (K=2 is sigmoid DPO), all_pairs (DPO on every pair of the list), "
                          "lipo_lambda (LiPO-lambda, label-weighted pairs), preferred_ft, or unlikelihood.",
                  "choices": list(LOSS_TYPES)},
    )
    unlikelihood_alpha: float = field(default=1.0, metadata={"help": "Weight of the unlikelihood term."})
    max_length: int | None = field(
        default=1024, metadata={"help": "Max tokens of prompt + completion; the end of longer ones is cut."}
    )
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "Where prompt + longest completion exceed max_length, the prompt keeps its "
                                        "last max_prompt_length tokens (as the DPO paper for HH); None: never cut."}
    )
    reference: str = field(
        default="auto",
        metadata={"help": "Reference source (see dpo_ext.reference).", "choices": list(REFERENCE_CHOICES)},
    )
    precompute_ref_log_probs: bool = field(
        default=False, metadata={"help": "Compute reference log-probs once before training (a ref_logps column)."}
    )
    precompute_ref_batch_size: int | None = field(
        default=None, metadata={"help": "Batch size of the reference precompute pass (default: eval batch size)."}
    )
    ref_cache_dir: str | None = field(
        default=None, metadata={"help": "Folder keeping precomputed reference log-probs between runs, reused only "
                                        "when their fingerprint (weights, adapter, tokenizer, max_length, data) "
                                        "matches."}
    )
    disable_dropout: bool = field(default=True, metadata={"help": "Disable dropout in policy and reference."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for dataset tokenization."})
    prefix_sharing: bool = field(
        default=False,
        metadata={"help": "Process each prompt once per list of K completions (packed rows); unsupported models "
                          "fall back to K rows with a warning."},
    )

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise SettingError(f"PLDPOConfig.loss_type: must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        check_numeric_fields(self)  # numbers read as text from YAML, and NaN/inf, stop here rather than mid-run
        self.beta = positive("PLDPOConfig.beta", self.beta)
        as_number("PLDPOConfig.unlikelihood_alpha", self.unlikelihood_alpha, minimum=0.0)
        as_number("PLDPOConfig.learning_rate", self.learning_rate, minimum=0.0)
        check_length_settings(self.max_length, self.max_prompt_length,  # the rule `dpo-ext validate` applies too
                              ("PLDPOConfig.max_length", "PLDPOConfig.max_prompt_length"))
        if self.ref_cache_dir and not self.precompute_ref_log_probs:
            raise SettingError("PLDPOConfig.ref_cache_dir keeps precomputed reference log-probs: set "
                               "precompute_ref_log_probs=True too (or leave ref_cache_dir unset)")
        if self.ref_cache_dir and cache_folder_problem(self.ref_cache_dir):  # before minutes of precomputing
            raise SettingError(f"PLDPOConfig.ref_cache_dir: {cache_folder_problem(self.ref_cache_dir)}")
        super().__post_init__()
