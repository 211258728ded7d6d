"""Training: the loop over trials, one trial's epochs, what a job keeps, checkpoints, cached
in-batch negatives, the training sets, losses/ (one per file), and the same loop on Ray Train
workers (distributed.py, through scale/).
"""
