"""The local model tier: labelled data (datasets), encoders, the trained heads (model,
train), ready fine-tuned checkpoints (checkpoint) and evaluation (evaluate)."""
