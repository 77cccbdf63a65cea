"""The local model tier (issue 6): labelled data, evaluation, and later the trained model."""
