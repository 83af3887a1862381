"""Stage 2: the inference service, its client, the models and the shard jobs a run tracks."""
