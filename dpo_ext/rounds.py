"""On-policy rounds: sample K completions per prompt from the current policy, label them with a judge, train on them
with any loss, evaluate, and go again from the trained policy (iterative DPO, Xiong et al. 2024; self-rewarded with
the policy's own implicit reward, DICE, Chen et al. 2024). Unlike TRL's online DPO (2 completions), the whole list of
K labelled completions is trained on, by any `PLDPOConfig.loss_type` (Plackett-Luce, LiPO-lambda, all pairs).

Each round ``r`` writes ``<output_dir>/round-<r>/``:

- ``samples.jsonl``: ``{"prompt", "completions"}`` per prompt, K completions sampled from the policy of the round's
  start (seed ``seed + r``);
- ``labelled.jsonl``: the same rows with the judge's ``scores`` (the training rows);
- ``train/``: the trainer's run folder (checkpoints when ``save_strategy`` asks for them);
- ``adapter/``: the trained adapter, with its training record (beta, reference) like any `PLDPOTrainer` adapter;
- ``eval_results.json`` and ``round.json`` (written last: the round is done).

Resuming: `run_rounds` on a folder that holds some rounds goes on where it stopped, and gives the same result as an
uninterrupted run: a finished round is read back; a round's samples and labels are reused when their file exists
(files are written whole or not at all); training resumes from the newest complete checkpoint of ``train/`` (bit-
identical, see `dpo_ext.training.checkpointing`), or starts again with the same seed.

The reference: ``"initial"`` (default) keeps the round-1 starting policy, the base model with the adapter disabled,
for every round (`reference="base_model"` of `PLDPOConfig` after round 1), so all rounds optimise one KL-regularised
objective; ``"previous"`` uses the policy each round starts from (a frozen copy of the adapter, ``"adapter_copy"``),
as iterative DPO does.
"""

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dpo_ext.judges.base import Judge

logger = logging.getLogger(__name__)

ROUND_RECORD = "round.json"
REFERENCES = ("initial", "previous")
EVAL_SEED_OFFSET = 1_000_003  # evaluation samples never share a seed with a round's training samples
SELF_JUDGE = "self"  # the judge spec of self-rewarding: the implicit reward of the policy the round starts from


@dataclass
class RoundSettings:
    """What a run of rounds needs besides the training arguments.

    Args:
        rounds (`int`): how many rounds.
        k (`int`): completions sampled per prompt (>= 2: a list to rank).
        judge (`str` or `dpo_ext.judges.Judge`): a judge spec (`dpo_ext.judges.load_judge`), a judge object (a
            program's own, e.g. a `FunctionJudge` around a classifier already in memory), or ``"self"``: the implicit
            reward of the policy the round starts from (round 1 then needs ``start_adapter``, a trained adapter, or a
            finished ``round-1/`` in the run folder, e.g. copied from a run judged otherwise).
        reference (`str`): ``"initial"`` or ``"previous"`` (see the module docstring).
        generation (`dict`): sampling settings (``max_new_tokens``, ``temperature``, ...; see `dpo_ext.sampling`).
        seed (`int`): round r samples with ``seed + r`` and trains with ``training seed + r``.
        eval_k (`int`): completions sampled per evaluation prompt after each round.
        eval_judge (`str` or `Judge`, *optional*): the judge of the evaluation (default: ``judge``, which must then
            not be ``"self"``: a policy grading itself is no measurement).
        normalize (`str`): how the training labels are mapped (`dpo_ext.labeling.normalize_scores`: ``"none"``,
            ``"minmax"`` or ``"sigmoid"``); only LiPO-lambda's gains depend on it.
        prompts_per_round (`int`, *optional*): round r samples the r-th slice of this many prompts (wrapping around
            the list), so that R rounds see as many prompts, and train as many steps, as one offline pass over them;
            `None` (default): every round samples every prompt.
    """

    rounds: int = 3
    k: int = 4
    judge: str = ""
    reference: str = "initial"
    generation: dict = field(default_factory=dict)
    seed: int = 0
    eval_k: int = 4
    eval_judge: str | None = None
    normalize: str = "none"
    prompts_per_round: int | None = None

    def check(self) -> None:
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be a whole number >= 1, got {self.rounds!r}")
        if not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"k must be at least 2 (each prompt's completions are ranked against each other), got "
                             f"{self.k!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if not self.judge:
            raise ValueError("a judge is required: a reward model (rm:PATH), an adapter's implicit reward "
                             "(implicit:PATH), a Python function (py:module:function), or 'self'")
        if (self.eval_judge or self.judge) == SELF_JUDGE:
            raise ValueError("the evaluation judge cannot be 'self' (a policy grading itself is no measurement): "
                             "pass eval_judge (--eval_judge) with a reward model or function")
        from dpo_ext.judges import check_judge_spec
        from dpo_ext.sampling import generation_config

        generation_config(None, self.generation)  # settings that cannot sample

        for spec in {self.judge, self.eval_judge} - {None, SELF_JUDGE}:
            if isinstance(spec, str):
                check_judge_spec(spec)  # a typo found now, not after the first round's sampling
        if self.prompts_per_round is not None and (not isinstance(self.prompts_per_round, int)
                                                   or self.prompts_per_round < 1):
            raise ValueError(f"prompts_per_round must be a whole number >= 1 or None, got {self.prompts_per_round!r}")


def run_rounds(load_base: Callable, tokenizer, prompts: list, args, settings: RoundSettings, *, peft_config=None,
               start_adapter: str | None = None, eval_prompts: list | None = None, callbacks=None) -> list[dict]:
    """Run (or resume) ``settings.rounds`` on-policy rounds in ``args.output_dir``; see the module docstring.

    Args:
        load_base (`Callable`): returns a fresh copy of the base model (a causal LM) each time it is called: every
            round wraps its own copy with the adapter.
        tokenizer: the policy's tokenizer.
        prompts (`list`): the prompts sampled from each round (text or chat messages).
        args (`PLDPOConfig`): training arguments of each round (``output_dir`` is the run's folder; each round trains
            in ``round-<r>/train``).
        settings (`RoundSettings`): rounds, K, judge, reference, sampling.
        peft_config (*optional*): the LoRA of round 1, when it starts from a fresh adapter.
        start_adapter (`str`, *optional*): a saved adapter round 1 starts from instead (trained, for ``judge="self"``).
        eval_prompts (`list`, *optional*): prompts the policy is sampled on after each round, judged by the
            evaluation judge (mean and standard error in ``eval_results.json``).
        callbacks (`list[transformers.TrainerCallback]`, *optional*): given to every round's trainer (each round's
            trainer counts its steps from 0).

    Returns:
        `list[dict]`: one summary per round (what ``round.json`` holds).
    """
    settings.check()
    if (peft_config is None) == (start_adapter is None):
        raise ValueError("pass one of peft_config (round 1 trains a fresh adapter) and start_adapter (a saved one)")
    if settings.reference == "initial" and start_adapter is not None:
        raise ValueError("reference='initial' keeps the base model as the reference, which is the starting policy only "
                         "for a fresh adapter; with start_adapter use reference='previous'")
    run_dir = Path(args.output_dir)
    if settings.judge == SELF_JUDGE and start_adapter is None and not (run_dir / "round-1" / ROUND_RECORD).is_file():
        raise ValueError("judge='self' scores round 1's samples with the starting policy's implicit reward, which is 0 "
                         "for a fresh adapter (no preference at all): pass start_adapter, a trained adapter, or put a "
                         f"finished round 1 (judged otherwise) in {run_dir / 'round-1'}")
    summaries = []
    for r in range(1, settings.rounds + 1):
        folder = run_dir / f"round-{r}"
        record = folder / ROUND_RECORD
        if record.is_file():
            summaries.append(json.loads(record.read_text(encoding="utf-8")))
            logger.warning("Round %d: done earlier (%s), read back.", r, record)
            continue
        start = str(run_dir / f"round-{r - 1}" / "adapter") if r > 1 else start_adapter
        summaries.append(_run_round(r, folder, load_base, tokenizer, round_prompts(prompts, settings, r), args,
                                    settings, peft_config if start is None else None, start, eval_prompts,
                                    callbacks))
    return summaries


def _run_round(r, folder: Path, load_base, tokenizer, prompts, args, settings, peft_config, start, eval_prompts,
               callbacks):
    model = _policy(load_base, start)  # one load per round: sampled from, then trained
    rows = _cached(folder / "samples.jsonl", lambda: _sample_rows(
        model, tokenizer, prompts, settings.k, settings.generation, settings.seed + r))
    judge = _self_judge(load_base, start) if settings.judge == SELF_JUDGE else settings.judge  # spec or Judge
    labelled = _cached(folder / "labelled.jsonl", lambda: _label(_rankable(rows, r), judge, settings.normalize,
                                                                args.loss_type == "lipo_lambda"))
    from dpo_ext.training.checkpoint_files import checkpoints_by_step

    trainer = _trainer(r, folder, model, tokenizer, labelled, args, settings, peft_config, start, callbacks)
    # any checkpoint-N of an earlier, killed run: the trainer resumes from the newest complete one
    resume = bool(checkpoints_by_step(trainer.args.output_dir))
    output = trainer.train(resume_from_checkpoint=True if resume else None)
    adapter = folder / "adapter"
    _save_whole(trainer, adapter, r, settings)
    results = {"round": r, "train_loss": output.training_loss, "train_steps": trainer.state.global_step,
               "prompts": len(rows), "trained_rows": len(labelled),
               "reference": trainer.reference.name, "judge": judge_name(settings.judge),
               "loss_type": trainer.args.loss_type}
    if eval_prompts:
        results.update(_evaluate(trainer.model, tokenizer, eval_prompts, settings, r))
    (folder / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    partial = folder / (ROUND_RECORD + ".partial")
    partial.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, folder / ROUND_RECORD)
    logger.warning("Round %d done: %s", r, results)
    return results


def round_prompts(prompts: list, settings: RoundSettings, r: int) -> list:
    """The prompts round ``r`` (1-based) samples: all of them, or its slice of ``settings.prompts_per_round``."""
    n = settings.prompts_per_round
    if n is None:
        return prompts
    start = (r - 1) * n
    return [prompts[(start + i) % len(prompts)] for i in range(min(n, len(prompts)))]


def _self_judge(load_base, adapter: str) -> Judge:
    """The implicit reward of the round's starting policy: its adapter on a fresh base from ``load_base`` (an adapter
    folder need not record where its base model lives)."""
    from dpo_ext.judges import ImplicitRewardJudge

    return ImplicitRewardJudge.from_pretrained(adapter, name=f"implicit:{adapter}", base_model=load_base())


def judge_name(judge) -> str:
    """How round records name a judge: its spec, or a judge object's ``name``."""
    return judge if isinstance(judge, str) else judge.name


def _cached(path: Path, make: Callable) -> list[dict]:
    """The rows in ``path`` when it exists (a resumed run), else ``make()``'s, written there whole."""
    from dpo_ext.data.jsonl import iter_jsonl, write_jsonl

    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return [row for _, row in iter_jsonl(path, f)]
    rows = make()
    write_jsonl(path, rows)
    return rows


def _policy(load_base, adapter: str | None):
    """The policy a round starts from: a fresh base (a fresh LoRA is the base itself), with ``adapter`` loaded
    trainable when there is one."""
    model = load_base()
    if adapter is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter, is_trainable=True)


def _sample_rows(policy, tokenizer, prompts, k, generation, seed) -> list[dict]:
    from dpo_ext.sampling import sample_completions

    samples = sample_completions(policy, tokenizer, prompts, k, generation, seed=seed)
    return [{"prompt": prompt, "completions": s.texts} for prompt, s in zip(prompts, samples)]


def _rankable(rows: list[dict], r: int) -> list[dict]:
    """The rows to label and train on: blank completions (a sample that ended at once) left out, then rows left with
    fewer than two completions; both counted in the log. ``samples.jsonl`` keeps every sample as it was drawn."""
    kept, blank, dropped = [], 0, 0
    for row in rows:
        completions = [c for c in row["completions"] if c.strip()]
        blank += len(row["completions"]) - len(completions)
        if len(completions) < 2:
            dropped += 1
            continue
        kept.append({**row, "completions": completions})
    if blank or dropped:
        logger.warning("Round %d: left out %d blank completions, then %d prompts with fewer than 2 completions.", r,
                       blank, dropped)
    if not kept:
        raise ValueError(f"round {r}: no prompt has two non-blank completions to rank (raise max_new_tokens, or "
                         "sample more per prompt)")
    return kept


def _judge(spec) -> Judge:
    """A judge object as it is, a spec loaded (`dpo_ext.judges.load_judge`)."""
    from dpo_ext.judges import load_judge

    return spec if isinstance(spec, Judge) else load_judge(spec)


def _label(rows, spec, normalize, lipo_labels=True) -> list[dict]:
    from dpo_ext.labeling import label_rows

    return label_rows(rows, _judge(spec), normalize=normalize, lipo_labels=lipo_labels)


def _trainer(r, folder, model, tokenizer, rows, args, settings, peft_config, start, callbacks=None):
    """Round ``r``'s `PLDPOTrainer` on ``model`` (the base with a fresh LoRA from ``peft_config``, or with the
    ``start`` adapter), with the reference ``settings.reference`` asks for."""
    from transformers import set_seed

    from dpo_ext.data.validation import rows_as_dataset
    from dpo_ext.training.trainer import PLDPOTrainer

    reference = "auto" if start is None else ("base_model" if settings.reference == "initial" else "adapter_copy")
    round_args = replace(args, output_dir=str(folder / "train"), seed=args.seed + r, reference=reference)
    set_seed(round_args.seed)  # a fresh LoRA's initial weights, the same in a resumed run
    return PLDPOTrainer(model, args=round_args, train_dataset=rows_as_dataset(rows), processing_class=tokenizer,
                        peft_config=peft_config, callbacks=callbacks)


def _save_whole(trainer, adapter: Path, r: int, settings: RoundSettings) -> None:
    """Save the trained adapter to ``adapter`` through a sibling folder renamed at the end, its training config
    completed with the rounds (what a published card lists with the hyperparameters)."""
    from dpo_ext.reference.record import WRITTEN_CONFIG

    staging = adapter.with_name(adapter.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    config_path = staging / WRITTEN_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config.update(on_policy_rounds=settings.rounds, round=r, samples_per_prompt=settings.k,
                  judge=judge_name(settings.judge), round_reference=settings.reference)
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(adapter, ignore_errors=True)
    os.replace(staging, adapter)


def _evaluate(policy, tokenizer, eval_prompts, settings, r) -> dict:
    """The evaluation judge's mean score of ``eval_k`` samples per evaluation prompt of the trained policy, with its
    standard error over prompts (a prompt's samples are not independent of each other)."""
    from dpo_ext.labeling import label_rows

    samples = _sample_rows(policy, tokenizer, eval_prompts, settings.eval_k,
                           settings.generation, EVAL_SEED_OFFSET + settings.seed + r)
    spec = settings.eval_judge or settings.judge
    scored = label_rows(samples, _judge(spec), allow_empty=True, lipo_labels=False)  # measured, not trained on
    per_prompt = [sum(row["scores"]) / len(row["scores"]) for row in scored]
    n = len(per_prompt)
    mean = sum(per_prompt) / n
    sem = math.sqrt(sum((v - mean) ** 2 for v in per_prompt) / (n - 1) / n) if n > 1 else None
    return {"eval_judge_mean": mean, "eval_judge_sem": sem, "eval_prompts": n}
