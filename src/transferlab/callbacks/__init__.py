"""Lightning callbacks: fault tolerance, step statistics, online probes."""
