"""Using a trained bundle: predict, evaluate, explain (Grad-CAM), metrics, thresholds, plots
and summaries.
"""
