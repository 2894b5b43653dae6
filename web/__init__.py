"""The service's HTTP API (`[http] listen`): lookalikes, status, health and metrics."""
