"""Prefect flows: small retried tasks put in order. The logic lives in `vae_pipeline`."""
