"""Prefect flows: small retried tasks put in order. The logic lives in `vae_pipeline`."""

import os

# A first run on a fresh machine creates and migrates the ephemeral API's database, which on a busy small machine
# takes longer than Prefect's 20 s default wait for the server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# No telemetry: the temporary server would report to Prefect over the internet (an ERROR line where there is no
# network), and the client's analytics would too. Set before Prefect is imported: its settings read the environment.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
