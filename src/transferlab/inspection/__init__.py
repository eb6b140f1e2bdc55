"""What fine-tuning changed in a backbone: representation similarity (CKA), weight change per block,
feature projections and input attributions. Torch-based; the `inspect` entry point is its one user."""
