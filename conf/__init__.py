# Hydra configs of transferlab, shipped in the package as `transferlab.conf` (pkg://transferlab.conf).
