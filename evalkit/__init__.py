"""evalkit: safety evaluation of checkpoints (ASR, over-refusal, probes, SafeBeam, steering, abliteration)."""
