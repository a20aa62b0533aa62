"""Prometheus / OpenMetrics export of a monitor, a table's health and a tracked series.

:func:`openmetrics` renders the text a Prometheus server scrapes; :func:`serve` keeps an HTTP
endpoint up (``/metrics``) whose values are read afresh at every scrape; :class:`Collector` is
the ``prometheus_client`` collector behind both, for a registry of your own. Needs
``prometheus-client`` (``pip install 'embcore[prometheus]'``).

Metric names (every one a gauge unless said; labels in braces):

=========================================  ===================================================
``embcore_monitor_updates_total``          counter: row updates the monitor compared
``embcore_monitor_items_seen``             distinct ids seen (HyperLogLog estimate)
``embcore_monitor_tracked_items``          items whose trajectories are recorded
``embcore_monitor_records``                trajectory records kept
``embcore_monitor_memory_bytes``           bytes held by the monitor
``embcore_monitor_update{statistic,quantile}``  quantiles (0.5, 0.9, 0.99) of drift,
                                           magnitude, relative_magnitude, norm over all updates
``embcore_monitor_update_mean{statistic}`` their means
``embcore_monitor_update_by_popularity_p50{statistic,popularity}``  median per popularity
                                           bucket (label: the bucket's lowest count)
``embcore_health_rows`` …                  with ``health=Monitor.health(table, ...)``: ``rows``,
                                           ``non_finite_rows``, ``over_norm_rows``,
                                           ``stale_rows``, ``never_updated_rows``,
                                           ``largest_norm``
``embcore_track_versions_total``           counter: versions recorded in the series
``embcore_track_<name>``                   the last version's value of every ``--fail-on``
                                           name (``rows``, ``nan_rows``, ``norm_p99``,
                                           ``drift_p50``, ``cka``, ``knn_overlap``, ...)
``embcore_track_maturity_median_versions{alpha}``  median versions to maturity
``embcore_track_alerts``                   ``--fail-on`` rules breached by the last read
=========================================  ===================================================

Example (the examples here need prometheus-client, so they are tested in
``tests/test_openmetrics.py`` rather than as doctests)::

    text = openmetrics(monitor, health=embcore.Monitor.health(table, max_norm=10.0))
    server = serve(monitor, port=9464)      # GET http://HOST:9464/metrics
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["Collector", "openmetrics", "serve"]

_QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99"))
_STATISTICS = ("drift", "magnitude", "relative_magnitude", "norm")
_HEALTH = (
    ("rows", "rows", "rows in the table"),
    ("non_finite", "non_finite_rows", "rows holding NaN or Inf"),
    ("over_norm", "over_norm_rows", "rows whose norm exceeds the limit"),
    ("stale", "stale_rows", "rows not updated within the TTL"),
    ("never_updated", "never_updated_rows", "rows never updated"),
    ("largest_norm", "largest_norm", "largest row norm"),
)

Source = Callable[[], tuple[Any, Sequence[Mapping[str, Any]], Sequence[str]]]


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        from embcore.errors import ConfigError

        raise ConfigError(
            "embcore.metrics needs prometheus-client: pip install 'embcore[prometheus]'"
        ) from None
    return prometheus_client


class Collector:
    """A ``prometheus_client`` collector of the values ``source()`` returns at each scrape:
    ``(monitor or None, versions, alerts)`` — ``versions`` the metrics of a tracked series
    (:attr:`embcore.track.Tracker.versions`), ``alerts`` the rules breached. ``health`` is a
    :meth:`embcore.Monitor.health` dict, or a callable returning one.

    Example::

        registry = prometheus_client.CollectorRegistry()
        registry.register(Collector(lambda: (monitor, [], [])))
    """

    def __init__(self, source: Source, health: Any = None, prefix: str = "embcore") -> None:
        self.source = source
        self.health = health
        self.prefix = prefix

    def describe(self) -> list[Any]:
        return []  # unchecked collector: the families depend on what the source holds

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        p = self.prefix
        monitor, versions, alerts = self.source()
        if monitor is not None:
            s = monitor.summary()
            updates = CounterMetricFamily(f"{p}_monitor_updates", "row updates compared")
            updates.add_metric([], float(s["updates"]))
            yield updates
            for key, text in (
                ("items_seen", "distinct ids seen (HyperLogLog estimate)"),
                ("tracked_items", "items whose trajectories are recorded"),
                ("records", "trajectory records kept"),
                ("dropped_records", "trajectory records dropped at max_records"),
                ("memory_bytes", "bytes held by the monitor"),
            ):
                yield GaugeMetricFamily(f"{p}_monitor_{key}", text, value=float(s[key]))
            quantiles = GaugeMetricFamily(
                f"{p}_monitor_update",
                "quantiles of the per-update statistics",
                labels=["statistic", "quantile"],
            )
            means = GaugeMetricFamily(
                f"{p}_monitor_update_mean",
                "means of the per-update statistics",
                labels=["statistic"],
            )
            by_pop = GaugeMetricFamily(
                f"{p}_monitor_update_by_popularity_p50",
                "median per-update statistic per popularity bucket (lowest count of the bucket)",
                labels=["statistic", "popularity"],
            )
            overall = s["overall"]
            for stat in _STATISTICS:
                o = overall[stat]
                if o["n"]:
                    for key, q in _QUANTILES:
                        quantiles.add_metric([stat, q], _number(o[key]))
                    means.add_metric([stat], _number(o["mean"]))
                g = s["by_popularity"]
                for lower, n, median in zip(g["lower"], g["n"], g[stat]["p50"], strict=True):
                    if n:
                        by_pop.add_metric([stat, str(int(lower))], _number(median))
            yield quantiles
            yield means
            yield by_pop
        health = self.health() if callable(self.health) else self.health
        if health is not None:
            for key, name, text in _HEALTH:
                value = health.get(key)
                if isinstance(value, Mapping):
                    value = value.get("count")
                if value is not None:
                    yield GaugeMetricFamily(f"{p}_health_{name}", text, value=_number(value))
        if versions is not None and len(versions):
            yield from self._track(versions, alerts)

    def _track(self, versions: Sequence[Mapping[str, Any]], alerts: Sequence[str]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from embcore.track import RULE_NAMES

        p = self.prefix
        count = CounterMetricFamily(f"{p}_track_versions", "versions recorded in the series")
        count.add_metric([], float(len(versions)))
        yield count
        last = versions[-1]
        if last.get("time") is not None:
            yield GaugeMetricFamily(
                f"{p}_track_last_version_time_seconds",
                "time of the last version",
                value=float(last["time"]),
            )
        for name, text in RULE_NAMES.items():
            value = last.get(name)
            if value is not None:
                yield GaugeMetricFamily(f"{p}_track_{name}", text, value=_number(value))
        maturity = GaugeMetricFamily(
            f"{p}_track_maturity_median_versions",
            "median versions to maturity (tracked items)",
            labels=["alpha"],
        )
        for key, value in last.items():
            if (
                key.startswith("maturity_versions_")
                and key.endswith("_median")
                and value is not None
            ):
                maturity.add_metric([key.split("_")[2]], float(value))
        yield maturity
        yield GaugeMetricFamily(
            f"{p}_track_alerts",
            "--fail-on rules breached by the last read",
            value=float(len(alerts)),
        )


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def openmetrics(
    monitor: Any = None,
    health: Mapping[str, Any] | None = None,
    versions: Sequence[Mapping[str, Any]] | None = None,
    alerts: Sequence[str] = (),
    prefix: str = "embcore",
) -> str:
    """OpenMetrics text of ``monitor``'s summary (and of ``health``, a
    :meth:`embcore.Monitor.health` dict, and of a tracked series' ``versions``)."""
    client = _client()
    from prometheus_client.openmetrics.exposition import generate_latest

    registry = client.CollectorRegistry()
    registry.register(Collector(lambda: (monitor, versions or [], alerts), health, prefix))
    return str(generate_latest(registry).decode("utf-8"))


def serve(
    source: Source | Any,
    host: str = "0.0.0.0",
    port: int = 9464,
    health: Any = None,
    prefix: str = "embcore",
) -> Any:
    """Serve ``/metrics`` on ``host:port`` in a background thread (port 0: any free port;
    ``server.server_address`` says which) and return the server (``server.shutdown()`` then
    ``server.server_close()`` stop it). ``source`` is a monitor or a callable as for
    :class:`Collector`; Prometheus text or OpenMetrics by the scraper's ``Accept`` header."""
    client = _client()
    registry = client.CollectorRegistry()
    call = source if callable(source) else (lambda: (source, [], []))
    registry.register(Collector(call, health, prefix))
    server, _thread = client.start_http_server(port, addr=host, registry=registry)
    return server
