"""Evaluation: metrics, scoring, adaptation to new environments, held-out sets, few-shot curve, probe."""
