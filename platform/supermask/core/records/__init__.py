"""What a learned task is kept as, on NumPy alone: a mask packed at one bit per weight (`TaskMask`)
and trained weights (`TaskWeights`). The store and its actors read and write these without torch.
"""
