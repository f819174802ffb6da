"""Runtime concerns: process environment, device context, distributed set-up, logging, checkpoints."""
