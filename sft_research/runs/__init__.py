"""What a run writes and reads beside its model: its CSV logs, run.json, time per phase, files written atomically."""
