"""Reading run folders, tables and plots: what compare, sweeps and studies share. Never imports torch."""
