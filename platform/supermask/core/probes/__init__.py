"""Norm, direction, alignment, churn and saturation probes of K stacked tasks (the parameter norm
growth paper's measurements), and the probe of a stacked search.
"""
