"""Every Prometheus metric, defined once. Components only increment them.

Under `shadow up` (and `shadow proxy --workers N`) every child process writes its
metrics to files in one directory (prometheus_client's multiprocess mode, switched
on by the PROMETHEUS_MULTIPROC_DIR its parent sets), and one /metrics serves their
sum: the comparer's, or the `--metrics-listen` of the parent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client import values as _values
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch, read at import
CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0]


def exposition(multiproc_dir: str | None = None) -> bytes:
    """The text /metrics serves: this process's metrics, or the sum over every process
    writing to `multiproc_dir` (default: the directory this process writes to, if any)."""
    path = multiproc_dir or os.environ.get(MULTIPROC_ENV)
    if not path:
        return _generate_latest()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return _generate_latest(registry)


_contained_failed = False


def contained(update: Callable[..., object], *args: object) -> None:
    """Run one metrics update where a client's request or an event must not pay for it:
    an exception (a bug, a full disk under multiprocess mode) is logged once and costs
    only the count. `contained(EVENTS_PUBLISHED.inc, n)`,
    `contained(lambda: PROXY_REQUESTS.labels("ok").inc())`."""
    global _contained_failed
    try:
        update(*args)
    except Exception:
        if not _contained_failed:
            _contained_failed = True
            logging.getLogger("shadow.metrics").exception(
                "a metrics update failed; requests and events are unaffected, metrics may be "
                "incomplete (logged once)")


def write_to(multiproc_dir: str) -> None:
    """Make this process write its metrics to `multiproc_dir` too, as its children do. For a
    supervisor: it imported this module before it knew the directory, and prometheus_client
    picks its storage at import. Only series first touched after the call are written there
    (the supervisor's own, CHILD_RESTARTS: labelled series are created on first use)."""
    if os.environ.get(MULTIPROC_ENV) == multiproc_dir:
        return  # already (twice would open its files twice)
    os.environ[MULTIPROC_ENV] = multiproc_dir
    _values.ValueClass = _values.MultiProcessValue()

# proxy
PROXY_REQUESTS = Counter("shadow_proxy_requests_total", "Client requests the proxy answered",
                         ["result"])  # ok, v1_error, v1_timeout, v1_aborted, client_aborted, refused
PROXY_WEBSOCKETS = Counter("shadow_proxy_websockets_total",
                           "WebSocket upgrades passed through to V1 (not shadowed)")
PROXY_V1_DURATION = Histogram("shadow_proxy_v1_duration_seconds",
                              "Time from request to V1's response headers")
EVENTS_PUBLISHED = Counter("shadow_proxy_events_published_total", "Events written to Redis")
EVENTS_DROPPED = Counter("shadow_proxy_events_dropped_total",
                         "Events dropped instead of delaying clients", ["reason"])  # queue_full, redis
PUBLISH_QUEUE = Gauge("shadow_proxy_publish_queue_depth", "Events waiting to be published",
                      multiprocess_mode="livesum")
EVENTS_PRODUCED = Counter("shadow_proxy_events_total",
                          "Events the proxy produced to publish (a request and a response per "
                          "shadowed request): published + dropped + queued, or lost",
                          ["type"])  # request, response

# subscriber
REPLAYS = Counter("shadow_replays_total", "Requests handled by the subscriber",
                  ["result"])  # answered, error, skipped
REPLAY_DURATION = Histogram("shadow_replay_duration_seconds", "Time V2 took to answer a replay")
REPLAYS_IN_FLIGHT = Gauge("shadow_replays_in_flight", "Replays waiting on V2",
                          multiprocess_mode="livesum")
REPLAY_RETRIES = Counter("shadow_replay_retries_total",
                         "Safe requests sent to V2 a second time after a transient failure")
V2_BREAKER_OPEN = Gauge("shadow_v2_breaker_open",
                        "1 while the V2 circuit breaker is open (or probing): replays wait and "
                        "new entries stay in the stream", multiprocess_mode="livemax")
REPLAYS_WAITING = Gauge("shadow_replays_waiting",
                        "Requests read from the stream waiting for the V2 breaker to close",
                        multiprocess_mode="livesum")

# comparer
COMPARISONS = Counter("shadow_comparisons_total", "Exchanges compared", ["outcome"])
COMPARE_DURATION = Histogram("shadow_compare_duration_seconds", "Time the pure diff took",
                             buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0))
EVENTS_INGESTED = Counter("shadow_comparer_events_total", "Events written to the store", ["type"])
ROUTES_OVERFLOWED = Counter("shadow_routes_overflowed_total",
                            "Requests counted as the '(other)' route: --max-routes were known")
EVENTS_UNSTORABLE = Counter("shadow_comparer_unstorable_events_total",
                            "Events the store refused alone (left for redelivery, then "
                            "dead-lettered)")
CLASSES_NEW = Counter("shadow_mismatch_classes_new_total",
                      "Mismatch classes seen for the first time")
CLASSES_REOPENED = Counter("shadow_mismatch_classes_reopened_total",
                           "Mismatch classes marked fixed and seen again")
# the verdict (with its defaults, over its default window), recomputed every 30 s
ROUTE_READY = Gauge("shadow_route_ready", "1 when the verdict says the route is ready for "
                    "cutover, else 0", ["method", "route"], multiprocess_mode="livemostrecent")
VERDICT_READY = Gauge("shadow_verdict_ready", "1 when the verdict says every route is ready for "
                      "cutover", multiprocess_mode="livemostrecent")
NOTIFICATIONS = Counter("shadow_notifications_total", "Webhook notifications (--notify-url) by "
                        "result", ["result"])  # sent, failed, dropped (queue full), debounced
NOTIFICATION_RETRIES = Counter("shadow_notification_retries_total",
                               "Webhook deliveries tried again after a failure")

# supervisor (`shadow up`, `shadow proxy --workers N`)
CHILD_RESTARTS = Counter("shadow_child_restarts_total",
                         "Child processes restarted by the supervisor",
                         ["role", "reason"])  # reason: exited, unresponsive

# shared
POISON_EVENTS = Counter("shadow_poison_events_total", "Malformed stream entries dead-lettered",
                        ["group"])
DEAD_LETTERED = Counter("shadow_dead_lettered_total",
                        "Entries moved to the dead-letter stream after too many deliveries",
                        ["group"])
STREAM_DRAINED = Counter("shadow_stream_drained_total",
                         "Stream entries deleted because every consumer group had processed them",
                         ["stream"])
EVENTS_TRIMMED_UNREAD = Counter(
    "shadow_events_trimmed_unread_total", "Stream entries a safety limit (--stream-max-age-s, "
    "--stream-maxlen, --stream-max-bytes) deleted before some consumer group was given them",
    ["stream"])
# read from Redis when /metrics is asked for: the latest reading is the value
STREAM_LENGTH = Gauge("shadow_stream_length", "Entries in a stream", ["stream"],
                      multiprocess_mode="mostrecent")
STREAM_PENDING = Gauge("shadow_stream_pending", "Entries delivered but not acknowledged",
                       ["stream", "group"], multiprocess_mode="mostrecent")
STREAM_LAG = Gauge("shadow_stream_lag", "Entries not yet delivered to a group (Redis >= 7)",
                   ["stream", "group"], multiprocess_mode="mostrecent")
# a stream's safety limits and what it uses of them (the comparer reads them every 30 s)
STREAM_MAX_LENGTH = Gauge("shadow_stream_max_length", "--stream-maxlen: entries a stream keeps",
                          ["stream"], multiprocess_mode="mostrecent")
STREAM_MAX_BYTES = Gauge("shadow_stream_max_bytes", "--stream-max-bytes: a stream's Redis "
                         "memory limit", ["stream"], multiprocess_mode="mostrecent")
STREAM_MAX_AGE = Gauge("shadow_stream_max_age_seconds", "--stream-max-age-s: the age past which "
                       "entries are deleted", ["stream"], multiprocess_mode="mostrecent")
STREAM_MEMORY = Gauge("shadow_stream_memory_bytes", "A stream's Redis memory (MEMORY USAGE, "
                      "sampled)", ["stream"], multiprocess_mode="mostrecent")
STREAM_OLDEST_AGE = Gauge("shadow_stream_oldest_age_seconds", "Age of a stream's oldest entry",
                          ["stream"], multiprocess_mode="mostrecent")
STREAM_BEHIND = Gauge("shadow_stream_behind_seconds",
                      "Age gap between a stream's newest entry and the newest one its group got",
                      ["stream", "group"], multiprocess_mode="mostrecent")

# Series that exist from the start at 0, so that Prometheus sees their first increase
# (increase() and rate() cannot count the value a series is created with).
for _reason in ("queue_full", "redis", "error", "shutdown", "redaction", "shard_count"):
    EVENTS_DROPPED.labels(_reason)
for _result in ("answered", "error", "skipped"):
    REPLAYS.labels(_result)
for _result in ("sent", "failed", "dropped", "debounced"):
    NOTIFICATIONS.labels(_result)
