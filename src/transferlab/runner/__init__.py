"""Running transferlab: one stage, a pipeline of stages, building objects, restoring checkpoints, the run summary."""
