"""Models on disk: training runs (checkpoints/ with the train state, iterator state and config) and converted
checkpoints (model.json + variables), read by one loader (loader.py) that also assembles composite models from
the runs their parts come from."""
