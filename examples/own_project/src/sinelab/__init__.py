"""sinelab: noisy waveforms of 10 frequencies, a tiny 1-D CNN, pretrain on 5 frequencies, transfer to the others."""
