"""The catalog: all SQL against schema jammi (typed records), model ids -> folders, and the
Context one connection shares. No torch.
"""
