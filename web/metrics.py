"""Prometheus metrics of a running service: what it indexed, what waits, how long things take.

Counts are read when scraped (from the store's counts, kept until its next write, and the
service's status), so nothing is counted twice; timings are histograms observed as they happen.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from lookalike.api.catalogue import Catalogue
from lookalike.daemon.ingest_queue import IngestQueue
from lookalike.daemon.status import StatusReporter

# Seconds: from a cached search (a millisecond) to an image through the network (seconds).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, catalogue: Catalogue, status: StatusReporter, waiting: IngestQueue):
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "lookalike_request_seconds", "Seconds to answer an HTTP request, by route",
            ["route"], buckets=BUCKETS, registry=self.registry)
        self.embedding_seconds = Histogram(
            "lookalike_embedding_seconds", "Seconds the embedder took per image (a batch's "
            "time over its images)", buckets=BUCKETS, registry=self.registry)
        self.registry.register(ServiceCollector(catalogue, status, waiting))
        catalogue.app.pipeline.embed_observers.append(self._embedded)

    def _embedded(self, images: int, seconds: float) -> None:
        for _ in range(images):
            self.embedding_seconds.observe(seconds / images)


class ServiceCollector(Collector):
    def __init__(self, catalogue: Catalogue, status: StatusReporter, waiting: IngestQueue):
        self.catalogue, self.status, self.waiting = catalogue, status, waiting

    def collect(self) -> Iterator:
        store = self.catalogue.store
        counts, removals = store.tallies()
        indexed = GaugeMetricFamily("lookalike_images_indexed", "Images indexed, by the way "
                                    "their background was removed", labels=["removal"])
        for removal, count in removals.items():
            indexed.add_metric([removal], count)
        yield indexed
        yield GaugeMetricFamily("lookalike_images_failed", "Images that could not be indexed",
                                value=sum(c["failed"] for c in counts.values()))
        yield GaugeMetricFamily("lookalike_queue_files", "Files waiting for this node's "
                                "service loop", value=self.status.queue)
        yield GaugeMetricFamily("lookalike_backlog_files", "Files of the start-up backlog not "
                                "yet worked off", value=self.waiting.backlog_left)
        yield GaugeMetricFamily("lookalike_index_images", "Images in the in-memory index",
                                value=self.catalogue.index.size)
        last = store.get_meta("last_refresh")
        if last:
            yield GaugeMetricFamily("lookalike_last_snapshot_timestamp_seconds", "When the "
                                    "snapshot was last written (Unix time)",
                                    value=datetime.fromisoformat(last).timestamp())
        yield CounterMetricFamily("lookalike_database_outages", "Times this node found the "
                                  "database unreachable", value=self.status.outages)
        model = InfoMetricFamily("lookalike_model", "The pipeline's model id")
        model.add_metric([], {"model": self.catalogue.model})
        yield model
