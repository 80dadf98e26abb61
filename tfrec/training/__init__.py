"""Training runs: configuration, pretraining, fine-tuning."""
