"""Recipes (no Ray): a spec resolved once into a `Recipe`, and the units of work a worker runs with it."""
