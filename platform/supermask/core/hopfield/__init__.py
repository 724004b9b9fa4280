"""HopSupSup: neuron masks stored as attractors of Hopfield reservoirs, and their recovery without
task ids.
"""
