"""Retrieval metrics for text-based person search: CMC Rank-k, mAP, mINP, Jaccard re-ranking.

* ``ranking``: ranks of the relevant items from blocks of query rows, and the metrics.
* ``reranking``: the authors' Jaccard re-ranking as a sparse edit of each block.
* ``evaluation``: both directions from embeddings, streaming similarity blocks so memory stays
  bounded at every dataset's size.
"""

from textreid.metrics.evaluation import evaluate, evaluate_direction, format_table
from textreid.metrics.ranking import rank
from textreid.metrics.reranking import feature_neighbours, jaccard_rerank, topk_indices

__all__ = [
    "rank",
    "jaccard_rerank",
    "evaluate",
    "evaluate_direction",
    "feature_neighbours",
    "topk_indices",
    "format_table",
]
