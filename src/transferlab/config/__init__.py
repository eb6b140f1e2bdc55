"""Config handling: safe instantiation and validation of composed configs."""
