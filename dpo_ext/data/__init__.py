"""THE row format: preference rows -> validated, normalised, tokenized and collated examples. The one set of row
rules that the trainer, the scorer, the CLI and `dpo-ext validate` share.

Modules: `rows` (one row's rules: `normalize_row`; one prompt with completions to score: `check_scored`), `messages`
(what a chat message is), `tokenize` (`tokenize_ranked`, `prepare_ranked_dataset`), `collate` (plain and packed
batches), `validation` (`validate_rows`, the counts of what the rules drop), `jsonl` (reading and writing JSON Lines
files), `files` (rows of a file, folder or Hub dataset, named by file line).

Accepted row formats (all rows of a dataset share one format; K may vary from row to row):

- ranked:  ``{"prompt", "completions": [K], "ranks": [K]}``   (0 = best, equal ranks = tie)
- scored:  ``{"prompt", "completions": [K], "scores": [K]}``  (higher is better, equal scores = tie)
- pairwise (TRL's format): ``{"prompt", "chosen", "rejected"}``  (K = 2)
- tokenized: ``{"prompt_ids", "completion_ids": [K], "ranks": [K]}`` (e.g. a dataset prepared earlier)

Prompts and completions are strings, or (conversational form) lists of ``{"role", "content"}`` messages rendered
with the tokenizer's chat template. A precomputed ``ref_logps`` column (K floats per row) is kept.

Completions to score (`ImplicitRewardScorer`, `dpo-ext score` and `rerank`; `check_scored`) follow the same rules but
need no ranking: one or more per prompt, and a chat prompt's completion may be plain text (the assistant's message).
A row to score gives ``completion``, ``completions`` or ``chosen``/``rejected`` (`completion_fields`).

The rules (`normalize_row` applies them to one row; every caller goes through it):

- A prompt must give at least one token of its own: a completion's first token is predicted from the prompt's last
  token, and with no prompt token nothing predicts it, so it would silently go unscored. An empty or whitespace-only
  prompt (or chat messages that are all empty) is an error; to score without a prompt, use the tokenizer's BOS token
  text as the prompt. A prompt whose tokens merge with the start of every completion (so that the prompt and
  ``prompt + completion`` share no token) is an error at tokenization.
- Only the order of ranks matters: ``[0, 2, 2]`` and ``[1, 5, 5]`` are the same ranking. They are normalised to
  dense ranks (0, 1, 2, ...) so that downstream code can rely on 0 being the best group.
- Identical completions within a row (same text, same messages, or same token ids) are collapsed into one copy that
  keeps the best rank among them: a completion compared with itself carries no information, and duplicates would
  count one text several times in the loss. The number collapsed is logged.
- A row left with no preference (fewer than 2 distinct completions, or all tied) is dropped in training and skipped
  in evaluation (not counted as a wrong answer); the counts are logged by reason (`IDENTICAL`, `ALL_TIED`).
- Exact duplicate rows (same prompt, completions and ranks after the rules above) are kept, since repeating a row is
  a way to weight it, but they are counted and logged.
- ``ref_logps``, when a row has the field, must be K finite numbers.
"""
