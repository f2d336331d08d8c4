"""Publishing to the Hugging Face Hub: trained adapters (`adapters`) and generated preference data (`datasets`).

`ids` (what a Hub id looks like, offline mode), `training_files` and `adapter_folder` (reading and checking what is
published), `cards` (rendering model and dataset cards), `benchmarks` (results on Hub benchmarks: `.eval_results/`
files), `staging` (the folder one commit uploads), `publish` (token check, upload, retries).
"""
