"""Small shared helpers with no transferlab imports above them: file writing, checkpoint reading, Hydra context."""
