"""Training: the loop over trials, one trial's epochs, what a job keeps, checkpoints, cached
in-batch negatives, the training sets, and losses/ (one per file).
"""
