"""The names of the files a run writes into its checkpoints; the driver reads them by these names.

A module of its own so that the driver (`orchestrator/`) can name them without importing the training loop.
"""

STATE_FILE = "state.pt"  # every checkpoint: weights, optimizer, scheduler, every rank's random state, metrics
PREDICTIONS_FILE = "val_predictions.pt"  # the final checkpoint only: per-sample val records for the comparison
