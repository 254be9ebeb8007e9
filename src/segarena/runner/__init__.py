"""Grids, studies, executors, select and cross-dataset evaluation: everything that runs many protocol runs.

The results store these share sits one layer lower, in :mod:`segarena.store`, so that the protocol can write to it.
"""
