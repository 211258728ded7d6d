"""Evaluation: metric maths (pure numpy) and the evaluate_* functions over sources."""
