"""ImplicitRewardScorer: a DPO-trained model used as a reward model (DPO paper, section 5.1).

The implicit reward of a completion y of a prompt x is ``r(x, y) = beta * log pi(y|x) / pi_ref(y|x)``, with
``log pi(y|x)`` the summed log-prob of the completion's tokens, tokenized exactly as the trainer tokenizes them
(`dpo_ext.data.tokenize.tokenize_ranked`, TRL's convention), so scores of training rows equal the trainer's logged
``rewards/chosen``. ``tokenization="rewardbench"`` tokenizes as RewardBench does instead
(`dpo_ext.data.tokenize.tokenize_rewardbench`), to reproduce its numbers.

The reference comes from the same weights where it can (no second copy of the model), through the trainer's own
reference sources (`dpo_ext.reference.scoring_reference`):

- a PeftModel with nothing else given: the base model with adapters disabled (`DisabledAdapterReference`);
- ``ref_adapter="ref"``: a named adapter of the same PeftModel (`AdapterReference`; TRL's frozen copy when it
  re-trained an adapter);
- ``ref_model=...``: a separate model (`ModelReference`).

``beta`` is the one the adapter was trained with: `from_pretrained` reads it from the adapter's training record
(`dpo_ext.reference.record`) and refuses another unless told to override.

Speed: the prompt shared by a prompt's N completions is processed once per model (`dpo_ext.modeling.prompt_cache`), and
with ``mixed_adapter_batches`` the policy and the adapters-off reference run in one forward. Results equal the naive
computation (one ``prompt + completion`` row per completion, a separate reference model) to float tolerance.
"""

import contextlib
import logging

import torch

from dpo_ext.data.tokenize import REWARDBENCH_MAX_PROMPT_LENGTH, check_rewardbench_tokenizer
from dpo_ext.losses import implicit_rewards
from dpo_ext.modeling.models import active_adapter, check_tokenizer_fits, eval_mode
from dpo_ext.modeling.prompt_cache import Runner, prompt_cache_problem, score_groups
from dpo_ext.modeling.tokenizers import load_tokenizer, padding_id
from dpo_ext.reference.checks import ReferenceMismatchError, check_reference_model, is_peft_model
from dpo_ext.reference.choice import scoring_reference
from dpo_ext.reference.record import DEFAULT_BETA
from dpo_ext.scoring.inputs import (
    TOKENIZATIONS,
    completion_lists,
    token_groups,
    tokenize_inputs,
    tokenize_inputs_rewardbench,
)
from dpo_ext.scoring.results import BestOfN, ScoredCandidate, ScoreResult, candidates_of, check_finite_logps
from dpo_ext.settings import as_number, positive

__all__ = ["ImplicitRewardScorer"]

logger = logging.getLogger(__name__)

NORMALIZE_CHOICES = ("sum", "mean")


class ImplicitRewardScorer:
    """Score completions with a DPO-trained model's implicit reward ``beta * log pi(y|x) / pi_ref(y|x)``.

    Args:
        model (`PeftModel` or `PreTrainedModel`): the policy. A PeftModel's active adapter (or ``policy_adapter``)
            is the policy; with no ``ref_model``/``ref_adapter`` its base (adapters disabled) is the reference.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): loaded from the model's name or path when omitted.
        ref_model (`PreTrainedModel`, *optional*): a separate reference model.
        ref_adapter (`str`, *optional*): name of an adapter of ``model`` to use as the reference.
        policy_adapter (`str`, *optional*): adapter that is the policy (defaults to the active one).
        beta (`float`, *optional*): the DPO beta the model was trained with; 0.1 when `None` (`from_pretrained`
            reads it from the adapter's training record instead).
        beta_source (`str`, *optional*): where ``beta`` comes from, kept as `beta_source` (`from_pretrained` passes
            the record's file); defaults to ``"argument"``, or ``"default"`` when ``beta`` is `None`.
        reference_free (`bool`, defaults to `False`): score with ``beta * log pi`` only (RewardBench's
            reference-free mode, which by default also averages over tokens: ``normalize="mean"``); the default of
            `score`'s argument of the same name.
        max_length (`int`, *optional*): truncate ``prompt + completion`` to this many tokens, as the trainer does.
            With ``tokenization="rewardbench"``: RewardBench's ``max_length`` (2048 when `None`), truncating by its
            rule (see `dpo_ext.data.tokenize.tokenize_rewardbench`); it must then be above 128, its prompt length.
        tokenization (`str`, defaults to ``"trl"``): how texts become token ids. ``"trl"``: as ``trl.DPOTrainer``
            (and `PLDPOTrainer`) tokenize them, the convention the model was trained with. ``"rewardbench"``: as
            RewardBench's DPO scoring does (BOS always prepended, the prompt string removed from completions, EOS
            always appended, the completion's start moved back one token where prompt and completion merge), to
            reproduce a RewardBench number. Token ids given to `score_tokens` are scored as given either way.
        prefix_sharing (`bool`, defaults to `True`): process each prompt once per model (checked against the plain
            computation on first use; falls back with one warning where unsupported).
        mixed_adapter_batches (`bool`, *optional*): run policy and adapters-off/adapter reference in one forward
            (PEFT ``adapter_names``). `None` = on accelerators only: on CPU PEFT's per-row indexing costs more than
            the second forward it saves (see ``benchmarks/scoring.py``).
        max_batch_tokens (`int`, *optional*): padded tokens per forward (all copies, cache keys included; logits
            of small-model/large-vocabulary LM heads weigh more). Defaults to 1024 on CPU (already compute-bound
            there, and memory stays low) and 8192 on accelerators.
        max_row_tokens (`int`, defaults to 128): completion tokens concatenated into one row of the completion pass
            (fewer: less attention to the other completions of the row; more: fewer copies of the prompt cache).
    """

    def __init__(self, model, tokenizer=None, *, ref_model=None, ref_adapter=None, policy_adapter=None,
                 beta: float | None = None, beta_source: str | None = None, reference_free: bool = False,
                 max_length: int | None = None, prefix_sharing: bool = True, mixed_adapter_batches: bool | None = None,
                 max_batch_tokens: int | None = None, max_row_tokens: int = 128, tokenization: str = "trl"):
        self.beta_source = beta_source or ("default" if beta is None else "argument")
        beta = positive("beta", DEFAULT_BETA if beta is None else beta)
        if tokenization not in TOKENIZATIONS:
            raise ValueError(f"tokenization must be one of {TOKENIZATIONS}, got {tokenization!r}")
        peft = is_peft_model(model)
        self.reference_source = scoring_reference(model, ref_model, ref_adapter)
        self.policy_adapter = (policy_adapter or model.active_adapter) if peft else None
        if self.policy_adapter is not None and self.policy_adapter == ref_adapter:
            raise ValueError(f"the policy adapter and ref_adapter are both {ref_adapter!r}; pass policy_adapter=...")
        if tokenizer is None:
            tokenizer = load_tokenizer(model.name_or_path, "tokenizer")
        check_tokenizer_fits(model, tokenizer, "the policy")
        if ref_model is not None:
            check_reference_model(model, ref_model, tokenizer)
        if max_length is not None:
            if tokenization == "trl":
                max_length = as_number("max_length", max_length, int, minimum=2)
            else:  # RewardBench keeps up to 128 prompt tokens and cuts completions to max_length - 128
                max_length = as_number("max_length (RewardBench's, above its 128 prompt tokens)", max_length, int,
                                       minimum=REWARDBENCH_MAX_PROMPT_LENGTH + 1)
        if tokenization == "rewardbench":
            check_rewardbench_tokenizer(tokenizer)
        self.tokenization = tokenization
        self.model, self.tokenizer, self.ref_model, self.ref_adapter = model, tokenizer, ref_model, ref_adapter
        self.beta, self.reference_free, self.max_length = beta, reference_free, max_length
        on_cpu = next(model.parameters()).device.type == "cpu"
        if max_batch_tokens is not None:  # 0 would otherwise read as "the default"
            max_batch_tokens = as_number("max_batch_tokens", max_batch_tokens, int, minimum=1)
        self.max_batch_tokens = max_batch_tokens or (1024 if on_cpu else 8192)
        self.max_row_tokens = max_row_tokens
        self.pad_token_id = padding_id(tokenizer)
        self.prefix_sharing = prefix_sharing
        self._prefix_problems = {}  # id(model) -> why prefix sharing is off for it (None: on, checked)
        if mixed_adapter_batches is None:
            mixed_adapter_batches = not on_cpu
        self.mixed_adapter_batches = bool(mixed_adapter_batches and peft and self.reference_source is not None
                                          and self.reference_source.mixed_batch_adapter is not None)

    # -- where the reference comes from ----------------------------------------------------------------------------

    @property
    def reference(self) -> str | None:
        """``"disabled_adapters"``, ``"adapter:<name>"``, ``"ref_model"``, or `None` (no reference available)."""
        return None if self.reference_source is None else self.reference_source.label

    def _policy_context(self):
        return active_adapter(self.model, self.policy_adapter) if self.policy_adapter else contextlib.nullcontext()

    # -- scoring ---------------------------------------------------------------------------------------------------

    def _run(self, runner, groups, num_slots, progress) -> torch.Tensor:
        """(copies, num_slots) log-probs. Whether prefix sharing is exact for a model is asked once per model
        (`prompt_cache_problem`: the trainer's support check, then a probe); where it is not: plain rows, with one
        warning."""
        key = id(runner.model)
        if self.prefix_sharing and key not in self._prefix_problems:
            problem = prompt_cache_problem(runner, groups, self.max_length)
            self._prefix_problems[key] = problem
            if problem:
                logger.warning("Prefix sharing is off for %s (%s); scoring one prompt + completion row at a time.",
                               type(runner.model).__name__, problem)
        shared = self.prefix_sharing and self._prefix_problems[key] is None
        return score_groups(runner, groups, num_slots, prefix_sharing=shared, progress=progress,
                            max_batch_tokens=self.max_batch_tokens, max_row_tokens=self.max_row_tokens)

    def _logps(self, groups, num_slots, need_ref: bool, progress=None):
        """Policy and reference log-probs, (num_slots,) each (reference `None` when not needed)."""
        if need_ref and self.reference is None:
            raise ReferenceMismatchError(
                "this model is not a PEFT adapter and no ref_model was given, so there is no reference policy. Pass "
                "ref_model= (the model it was trained from), or score with reference_free=True."
            )
        with torch.inference_mode(), eval_mode(self.model, self.ref_model):
            if need_ref and self.mixed_adapter_batches:
                copies = [self.policy_adapter, self.reference_source.mixed_batch_adapter]
                try:
                    both = self._run(Runner(self.model, self.pad_token_id, copies), groups, num_slots, progress)
                    return both[0], both[1]
                except (ValueError, TypeError) as error:  # DoRA, merged adapters, non-LoRA tuners
                    logger.warning("Mixed-adapter batches are not possible here (%s); running the policy and the "
                                   "reference one after the other.", error)
                    self.mixed_adapter_batches = False
            with self._policy_context():
                policy = self._run(Runner(self.model, self.pad_token_id), groups, num_slots, progress)[0]
            if not need_ref:
                return policy, None
            with self.reference_source.reference_model(self.model) as reference:
                return policy, self._run(Runner(reference, self.pad_token_id), groups, num_slots, None)[0]

    def score_tokens(self, prompt_ids, completion_ids, *, beta=None, normalize="sum", reference_free=None,
                     progress=False) -> ScoreResult:
        """`score` for already tokenized inputs: ``prompt_ids`` (B lists of ints) and ``completion_ids`` (B lists
        of K_b lists of ints), scored as given whatever the scorer's ``tokenization``. Returns (B, K) results,
        NaN-padded."""
        return self._score_ids(prompt_ids, completion_ids, beta=beta, normalize=normalize,
                               reference_free=reference_free, progress=progress)

    def _score_ids(self, prompt_ids, completion_ids, completion_prompts=None, *, beta=None, normalize="sum",
                   reference_free=None, progress=False) -> ScoreResult:
        """`score_tokens`, or with ``completion_prompts`` (B lists of K_b prompt-id lists) one prompt per completion
        (see `token_groups`)."""
        if normalize not in NORMALIZE_CHOICES:
            raise ValueError(f"normalize must be one of {NORMALIZE_CHOICES}, got {normalize!r}")
        beta = self.beta if beta is None else positive("beta", beta)
        reference_free = self.reference_free if reference_free is None else reference_free
        models = [m for m in (self.model, self.ref_model) if m is not None]
        groups, counts, slots = token_groups(prompt_ids, completion_ids, models, self.max_length, completion_prompts)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(counts), desc="Scoring completions", unit="completion")
        try:
            policy, ref = self._logps(groups, len(counts), need_ref=not reference_free, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        # Cloned outside inference mode: results are ordinary tensors the caller may modify in place.
        policy, ref = policy.clone(), None if ref is None else ref.clone()
        num_tokens = torch.tensor(counts, dtype=torch.long)
        if normalize == "mean":
            policy_n = policy / num_tokens.clamp(min=1)
            ref_n = None if ref is None else ref / num_tokens.clamp(min=1)
        else:
            policy_n, ref_n = policy, ref
        check_finite_logps(slots, policy, ref)
        rewards = implicit_rewards(policy_n, torch.zeros_like(policy_n) if ref_n is None else ref_n, beta)
        return ScoreResult.from_slots(slots, rewards, policy, ref, num_tokens, beta=beta,
                                      normalize=normalize, reference_free=reference_free)

    def score(self, prompts, completions, *, beta=None, normalize="sum", reference_free=None,
              progress=False) -> ScoreResult:
        """Implicit rewards of completions.

        Args:
            prompts (`list`): B prompts, each a string or a list of chat messages.
            completions (`list`): B completions (one per prompt; strings, or messages for chat prompts) or B lists
                of completions (several per prompt, scored with the prompt processed once).
            beta (`float`, *optional*): overrides the scorer's beta.
            normalize (`str`): ``"sum"`` (the DPO reward) or ``"mean"`` (per-token average log-ratio).
            reference_free (`bool`, *optional*): reward = ``beta * log pi`` (RewardBench's reference-free mode).
            progress (`bool`): show a progress bar.

        Returns:
            [`ScoreResult`]: (B,) tensors for one completion per prompt, (B, K) for lists.
        """
        lists, nested = completion_lists(prompts, completions)
        result = self._score_texts(prompts, lists, beta=beta, normalize=normalize, reference_free=reference_free,
                                   progress=progress)
        return result if nested else result.first_column()

    def _score_texts(self, prompts, lists, allow_empty=False, **kwargs) -> ScoreResult:
        """Score B prompts with B lists of completions, checked by the row rules (`dpo_ext.scoring.inputs`)."""
        if self.tokenization == "rewardbench":
            completion_prompts, completion_ids = tokenize_inputs_rewardbench(prompts, lists, self.tokenizer,
                                                                             allow_empty, self.max_length)
            return self._score_ids(None, completion_ids, completion_prompts, **kwargs)
        prompt_ids, completion_ids = tokenize_inputs(prompts, lists, self.tokenizer, allow_empty)
        return self.score_tokens(prompt_ids, completion_ids, **kwargs)

    def rerank(self, prompt, candidates, **score_kwargs) -> list[ScoredCandidate]:
        """Candidates of one prompt, highest implicit reward first (ties keep input order)."""
        result = self._score_texts([prompt], [list(candidates)], **score_kwargs)
        return sorted(candidates_of(result, 0, list(candidates)), key=lambda c: -c.reward)

    def best_of_n(self, prompts, n: int, generation_config=None, sampler=None, sampler_tokenizer=None,
                  seed: int = 0, **score_kwargs) -> list[BestOfN]:
        """Sample ``n`` completions per prompt and pick the one with the highest implicit reward.

        Args:
            prompts (`list`): strings or chat-message lists.
            n (`int`): samples per prompt.
            generation_config (`GenerationConfig` or `dict`, *optional*): defaults to ancestral sampling
                (``do_sample=True, top_k=0, top_p=1.0``) with ``max_new_tokens=64``.
            sampler (*optional*): the model to sample from (defaults to the policy).
            sampler_tokenizer (*optional*): the sampler's tokenizer when it differs from the scorer's; samples are
                then decoded and scored as text. Otherwise the sampled token ids themselves are scored (with
                ``tokenization="rewardbench"``: decoded and scored as text, tokenized RewardBench's way).
            seed (`int`, defaults to 0): the sampling seed (`dpo_ext.sampling.sample_completions`: the same samples
                whatever the batch layout; the caller's random state is left as it was).
        """
        from dpo_ext.sampling import sample_completions

        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        same_tokens = (sampler_tokenizer is None or sampler_tokenizer is self.tokenizer) and self.tokenization == "trl"
        context = self._policy_context() if sampler is None else contextlib.nullcontext()
        with context, eval_mode(sampler or self.model):
            samples = sample_completions(sampler or self.model, sampler_tokenizer or self.tokenizer, prompts, n,
                                         generation_config, seed=seed)
        if same_tokens:
            result = self.score_tokens([s.prompt_ids for s in samples], [s.completion_ids for s in samples],
                                       **score_kwargs)
        else:
            result = self._score_texts(prompts, [s.texts for s in samples], allow_empty=True, **score_kwargs)
        return [BestOfN(prompt, candidates_of(result, b, s.texts))
                for b, (prompt, s) in enumerate(zip(prompts, samples))]

    @classmethod
    def from_pretrained(cls, model_id_or_path: str, **kwargs) -> "ImplicitRewardScorer":
        """Load a scorer from a local directory or Hub repo id; see `dpo_ext.scoring.loading.load_scorer`. ``beta``
        defaults to the one the adapter recorded (another is refused unless ``override_beta=True``); keyword
        arguments it does not take (``max_length``, ``tokenization``...) go to the scorer."""
        from dpo_ext.scoring.loading import load_scorer

        return load_scorer(cls, model_id_or_path, **kwargs)
