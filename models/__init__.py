"""Model files: where each is found, fetched (pinned, verified), quantized and run."""
