"""Training: `PLDPOConfig` (config), `PLDPOTrainer` (trainer: glue between a transformers Trainer and the pure
pieces), what the trainer builds and checks before training (setup, checks) and checkpoints that are complete or
absent (checkpoint_files: the files; checkpointing: the Trainer mixin)."""
