"""Publishing to the Hugging Face Hub: trained adapters (`adapter_push`) and generated preference data (`datasets`).

`adapter_files` (reading and checking an adapter folder's files: config, base model, beta, weights, training config,
evaluation results, plots), `base_model` and `licenses` (what a card says of the base model), `cards` and
`card_results` (rendering model and dataset cards), `eval_results` (results on Hub benchmarks: the `.eval_results/`
files), `staged_folder` (the folder one commit uploads), `publish` (token check, upload, retries). What a Hub id looks
like and offline mode are `dpo_ext.locations`.
"""
