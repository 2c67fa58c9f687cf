"""Classical features: segment each cell, measure it as CellProfiler does, prune the table."""
