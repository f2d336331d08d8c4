"""The sentences that say what the row rules changed or left out of a dataset: one wording for the trainer's log
(`dpo_ext.data.tokenize.prepare_ranked_dataset`), evaluation's log and `dpo-ext validate`'s report."""

from collections import Counter

from dpo_ext.data.rows import ALL_TIED, IDENTICAL

NO_PREFERENCE_REASONS = {IDENTICAL: "whose completions are all identical", ALL_TIED: "whose completions are all tied"}


def summarize_counts(num_rows: int, no_preference: Counter, collapsed: int, duplicates: int,
                     verb: str = "dropped") -> list[str]:
    """Sentences on what the row rules changed or left out (the trainer's log, evaluation's log, validate)."""
    lines = []
    if collapsed:
        lines.append(f"collapsed {collapsed} identical completion{'s' * (collapsed != 1)} within rows into one copy "
                     "each (keeping the best rank)")
    if sum(no_preference.values()):
        reasons = ", ".join(f"{no_preference[r]} {text}" for r, text in NO_PREFERENCE_REASONS.items()
                            if no_preference[r])
        lines.append(f"{verb} {sum(no_preference.values())} of {num_rows} rows with no preference ({reasons})")
    if duplicates:
        lines.append(f"{duplicates} row{' repeats' if duplicates == 1 else 's repeat'} an earlier row exactly (same "
                     "prompt, completions and ranks); kept, so they weigh more")
    return lines
