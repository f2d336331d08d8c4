"""Labelling completions with a judge: `label_rows` adds ``scores`` (one per completion, higher = better) to rows
``{"prompt", "completions", ...}``, which then train with any ranked loss; the scores are the label values of
``loss_type="lipo_lambda"``.

What a judge returns is checked here, for every kind of judge alike: one list per row, one finite number per
completion. A wrong count, NaN, infinity or a non-number is a `PreferenceDataError` at the row and completion
(``completions[k]``), naming the judge, so that ``dpo-ext label`` can name the file line.
"""

import logging
import math
from numbers import Real

from dpo_ext.data.rows import COMPLETIONS, PROMPT, RANKS, SCORES, PreferenceDataError, check_scored

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("none", "minmax", "sigmoid")


def check_label_rows(rows: list[dict], allow_empty: bool = False) -> list[list]:
    """Every row's completions by the row rules for scoring (`check_scored`: a prompt, a non-empty list of
    completions), before a judge loads; returns them (a chat prompt's text completions as assistant messages).

    Raises:
        `PreferenceDataError`: at the row and field (``prompt``, ``completions``, ``completions[k]``, ``ranks``).
    """
    checked = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PreferenceDataError(f"expected a row object, got {type(row).__name__}", i)
        if row.get(COMPLETIONS) is None:
            raise PreferenceDataError("missing (label rows are {'prompt', 'completions': [...]}; fields present: "
                                      f"{', '.join(sorted(row)) or 'none'})", i, COMPLETIONS)
        if row.get(RANKS) is not None:
            raise PreferenceDataError("the row is ranked already; labelling adds 'scores', and a row has 'ranks' or "
                                      "'scores', not both: drop 'ranks' to relabel it", i, RANKS)
        checked.append(check_scored(row.get(PROMPT), row[COMPLETIONS], i, allow_empty=allow_empty))
    return checked


def normalize_scores(scores: list[float], how: str) -> list[float]:
    """One row's scores mapped into [0, 1] (``"minmax"``: the row's best 1, its worst 0, all equal 0.5;
    ``"sigmoid"``: ``1 / (1 + exp(-score))``, for a reward model's logit) or left as they are (``"none"``). Both maps
    keep the order, so the ranks the trainer derives are the same; only LiPO-lambda's gains change."""
    if how == "none":
        return scores
    if how == "sigmoid":  # written so that neither branch overflows
        return [1 / (1 + math.exp(-s)) if s >= 0 else math.exp(s) / (1 + math.exp(s)) for s in scores]
    low, high = min(scores), max(scores)
    return [0.5] * len(scores) if high == low else [(s - low) / (high - low) for s in scores]


def label_rows(rows: list[dict], judge, *, batch_size: int = 8, normalize: str = "none",
               progress: bool = False, allow_empty: bool = False, lipo_labels: bool = True) -> list[dict]:
    """Score every completion of every row with ``judge`` and add the scores to the row.

    The scores are the LiPO label values (Liu et al. 2024, arXiv 2402.01878) of ``loss_type="lipo_lambda"``. The
    paper's labels lie in [0, 1], and the gain of a completion grows as ``2**score - 1``: an unbounded score (a reward
    model's logit of 8 gives a gain of 255) lets a few pairs outweigh the rest. ``normalize="sigmoid"`` (a logit
    into a probability, comparable across prompts) or ``"minmax"`` (each row onto [0, 1]) fix that; the order, and
    so every other loss, is unchanged by either. A warning is logged when ``"none"`` leaves scores outside [0, 1],
    unless ``lipo_labels=False`` says they will not be LiPO labels (a run whose loss only reads their order).

    Args:
        rows (`list[dict]`): ``{"prompt", "completions": [K completions], ...}``, prompts text or chat messages.
        judge (`dpo_ext.judges.Judge`): what scores (see `dpo_ext.judges.load_judge`).
        batch_size (`int`, defaults to 8): rows per call of the judge.
        normalize (`str`, defaults to ``"none"``): ``"none"``, ``"minmax"`` or ``"sigmoid"`` (see above).
        progress (`bool`): show a progress bar.
        allow_empty (`bool`): score empty completions too (a sample that ended at once, when measuring a policy);
            training rows cannot hold them.
        lipo_labels (`bool`, defaults to `True`): whether the scores may become LiPO-lambda labels (the [0, 1]
            warning above); `False` for scores only ranked or averaged.

    Returns:
        `list[dict]`: each row with ``"scores"``: K floats (a ``scores`` it had is replaced), every other field kept;
        a chat prompt's text completions become assistant messages, as training rows need them. Rows with K >= 2
        are valid training rows (`PLDPOTrainer`, any ranked ``loss_type``).

    Raises:
        `PreferenceDataError`: a bad row (see `check_label_rows`), or a judge's output that is not one finite number
            per completion, at the row and completion, naming the judge.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    completions = check_label_rows(rows, allow_empty)
    name = getattr(judge, "name", None) or repr(judge)
    from tqdm.auto import tqdm

    labelled = []
    with tqdm(total=len(rows), desc=f"Labelling with {name}", unit="row", disable=not progress) as bar:
        for start in range(0, len(rows), batch_size):
            batch = completions[start:start + batch_size]
            try:
                output = judge([row[PROMPT] for row in rows[start:start + batch_size]], batch)
            except PreferenceDataError as error:  # the scorer counts the prompts of this call: name the row
                raise error.located(row=start + (error.row or 0), unit="row") from error
            for b, scores in enumerate(checked_scores(output, batch, start, name)):
                labelled.append({**rows[start + b], COMPLETIONS: batch[b], SCORES: normalize_scores(scores, normalize)})
            bar.update(len(batch))
    if lipo_labels and normalize == "none" and any(not 0 <= s <= 1 for row in labelled for s in row[SCORES]):
        logger.warning("Scores from %s fall outside [0, 1]: as LiPO-lambda labels their gains grow as 2**score; "
                       "consider normalize='sigmoid' or 'minmax' (--normalize) for loss_type='lipo_lambda'.", name)
    return labelled


def checked_scores(output, completions: list[list], start: int, judge: str) -> list[list[float]]:
    """A judge's ``output`` for rows ``start ..`` (with ``completions``) as lists of floats, or the error.

    Raises:
        `PreferenceDataError`: a wrong count of lists or of scores, a non-number, NaN or infinity, at its row (and
            completion), naming ``judge``.
    """
    output = output.tolist() if hasattr(output, "tolist") else output  # a tensor or an array is fine
    if not isinstance(output, (list, tuple)) or len(output) != len(completions):
        got = f"{len(output)} score lists" if isinstance(output, (list, tuple)) else f"a {type(output).__name__}"
        raise PreferenceDataError(f"the judge {judge} returned {got} for a batch of {len(completions)} rows (this one "
                                  "first); it must return one list of scores per row", start, COMPLETIONS)
    checked = []
    for b, (scores, row) in enumerate(zip(output, completions)):
        scores = scores.tolist() if hasattr(scores, "tolist") else scores
        if not isinstance(scores, (list, tuple)) or len(scores) != len(row):
            got = f"{len(scores)} scores" if isinstance(scores, (list, tuple)) else f"a {type(scores).__name__}"
            raise PreferenceDataError(f"the judge {judge} returned {got} for the row's {len(row)} completions; it "
                                      "must return one score per completion", start + b, COMPLETIONS)
        for k, score in enumerate(scores):
            if isinstance(score, bool) or not isinstance(score, Real):
                problem = f"{score!r} ({type(score).__name__}), not a number"
            elif not math.isfinite(score):
                problem = f"{score!r}, not a finite number"
            else:
                continue
            raise PreferenceDataError(f"the judge {judge} returned {problem} for this completion; a judge must "
                                      "return a finite score for every completion", start + b, f"{COMPLETIONS}[{k}]",
                                      completion=k)
        checked.append([float(s) for s in scores])
    return checked
