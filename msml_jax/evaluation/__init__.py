"""Evaluation: embeddings of a split -> each dataset's protocol -> ranking metrics -> records and tables.

Modules: ranking (CMC / mAP / mINP, numpy), retrieval (embedding a split, distances), protocols (one function
per ranking), evaluator (the entry point the trainer and eval.py call), report (tables). Nothing here imports
msml_jax.training; TensorFlow is imported only when a split is actually embedded.
"""

from msml_jax.evaluation.ranking import AP_MODES, evaluate_ranking

__all__ = ["evaluate_ranking", "AP_MODES"]
