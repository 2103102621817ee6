"""The command implementations behind `rrdistill` (registered in :mod:`rrdistill.cli`)."""
