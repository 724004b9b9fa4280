"""The stacked search: K tasks' masks (or trained weights) learned in one loop over one frozen base,
with its optimizers, losses and the stacked batches it reads.
"""
