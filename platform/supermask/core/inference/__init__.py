"""Task inference without task labels (SupSup): one-shot and binary inference over a superposition of
masks, the mask banks it scores, and learning without task ids (NNs).
"""
