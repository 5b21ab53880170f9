"""The engine: models, the timed generation loop, prompts and the paired session, run records."""
