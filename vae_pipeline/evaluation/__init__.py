"""Evaluation: metrics on frames (pure), the report writer and the evaluation job."""
