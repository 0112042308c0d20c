"""Evaluation: the confusion-matrix metrics (:mod:`autoseg.evaluation.metrics`) and test-time
inference over scales, flips and sliding windows (:mod:`autoseg.evaluation.test_time`)."""
