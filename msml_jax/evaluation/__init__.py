"""Re-identification ranking evaluation (numpy only)."""

from msml_jax.evaluation.ranking import AP_MODES, evaluate_ranking

__all__ = ["evaluate_ranking", "AP_MODES"]
