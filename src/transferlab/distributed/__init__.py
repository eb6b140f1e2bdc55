"""Multi-process runs: launching and watching DDP ranks, environment checks, FSDP policy."""
