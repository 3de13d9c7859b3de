"""The scale stage: cluster sizes -> sampling probabilities, per-shard tables, report, plot, export."""
