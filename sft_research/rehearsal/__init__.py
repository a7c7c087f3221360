"""Rehearsals: a paper config run on this CPU through the real run's code path, with stand-in models, schema
fixtures of hub data, CPU processes, small batches and 2 steps per fit (``sft-research rehearse --config FILE``)."""
