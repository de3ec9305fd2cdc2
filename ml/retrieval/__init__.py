"""Retrieval utilities (numpy only)."""

from .postprocess import (alpha_query_expansion, average_query_expansion, database_side_augmentation,
                          look_transfer_scores, top_k_neighbours)

__all__ = ["top_k_neighbours", "average_query_expansion", "alpha_query_expansion",
           "database_side_augmentation", "look_transfer_scores"]
