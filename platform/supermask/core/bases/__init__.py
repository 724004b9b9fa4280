"""Frozen base networks: MLPs, convnets, a small transformer, built bit for bit from a `BaseSpec`,
and the stacked forward pass of K tasks through one base.
"""
