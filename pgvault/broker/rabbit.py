"""RabbitMQ adapter (pika). The only module that imports pika.

- Publishing: one confirm-mode channel per thread, persistent messages, `mandatory` so an
  event that no queue would receive is an error instead of vanishing. A dropped
  connection is re-opened once per publish before giving up with BrokerError.
- Consuming: the connection lives in the calling thread, which keeps pumping I/O (and
  heartbeats) while handlers run in a small thread pool; a message is settled (ack,
  retry-queue, dead-letter) only after its handler returned. SIGTERM-style stop cancels
  the consumer, lets in-flight handlers finish, settles them, then returns.
- Broker outages: the consume loop reconnects with backoff; unacked messages are
  redelivered by RabbitMQ, which the idempotent stages tolerate.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pika  # noqa: TID251 - this module is the pika adapter
import pika.exceptions  # noqa: TID251
from pika.adapters.blocking_connection import BlockingChannel  # noqa: TID251
from pika.adapters.utils.connection_workflow import (  # noqa: TID251
    AMQPConnectorException,
    AMQPConnectorStackTimeout,
)

from pgvault.broker.auth import MessageAuth
from pgvault.broker.base import (
    Broker,
    ConsumeStats,
    Delivery,
    Disposition,
    Handler,
    QueueDepth,
    Retry,
    parking,
)
from pgvault.broker.topology import Topology
from pgvault.config import redact_url
from pgvault.errors import BrokerError

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (
    AMQPConnectorException,
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionClosed,
    pika.exceptions.StreamLostError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
)
DRAIN_GRACE_S = 1.0


class RabbitBroker(Broker):
    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        heartbeat: int = 60,
        connect_timeout: float = 10.0,
        call_timeout: float = 15.0,
        prefetch: int = 1,
        auth: MessageAuth | None = None,
    ) -> None:
        super().__init__(topology, auth)
        self._url_text = redact_url(url)
        try:
            self._params = pika.URLParameters(url)
        except Exception:
            raise BrokerError(f"invalid broker URL {self._url_text}") from None
        # a broker that accepts TCP but never answers must not hang anyone: TCP connect,
        # the whole AMQP handshake and a blocked (resource alarm) connection all time out
        self._params.socket_timeout = connect_timeout
        self._params.stack_timeout = max(connect_timeout, call_timeout)
        self._params.blocked_connection_timeout = call_timeout
        self._params.connection_attempts = 1
        self._params.retry_delay = 0
        # short-lived and publisher connections: heartbeats detect a broker that stops
        # answering mid-call (a publish waiting for its confirm, a declare)
        self.call_heartbeat = max(2, int(call_timeout // 2))
        self.heartbeat = heartbeat
        self.prefetch = prefetch
        self._down = False  # consume loop: broker currently unreachable
        self._local = threading.local()

    # -- connections -------------------------------------------------------------
    def _connect(self, heartbeat: int) -> pika.BlockingConnection:
        params = copy.copy(self._params)  # threads connect concurrently
        params.heartbeat = heartbeat
        try:
            return pika.BlockingConnection(params)
        except pika.exceptions.ProbableAuthenticationError:
            raise BrokerError(f"broker {self._url_text} refused the credentials") from None
        except pika.exceptions.ProbableAccessDeniedError:
            raise BrokerError(f"broker {self._url_text}: access to the vhost denied") from None
        except AMQPConnectorStackTimeout:
            raise BrokerError(
                f"broker {self._url_text} unreachable (no AMQP handshake within "
                f"{params.stack_timeout:g}s: wedged?)"
            ) from None
        except (pika.exceptions.AMQPError, AMQPConnectorException, OSError) as exc:
            reason = type(exc).__name__
            raise BrokerError(f"broker {self._url_text} unreachable ({reason})") from None

    def _publisher(self) -> BlockingChannel:
        ch: BlockingChannel | None = getattr(self._local, "channel", None)
        if ch is None or not ch.is_open:
            # publisher connections idle between bursts: the broker may drop them for
            # missed heartbeats; a publish then reconnects once (below)
            conn = self._connect(heartbeat=self.call_heartbeat)
            ch = conn.channel()
            ch.confirm_delivery()
            self._local.connection = conn
            self._local.channel = ch
        return ch

    def _reset_publisher(self) -> None:
        conn = getattr(self._local, "connection", None)
        self._local.channel = None
        self._local.connection = None
        if conn is not None and conn.is_open:
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.close()

    def close(self) -> None:
        self._reset_publisher()

    # -- topology ----------------------------------------------------------------
    def declare(self) -> None:
        conn = self._connect(heartbeat=self.call_heartbeat)
        try:
            ch = conn.channel()
            ch.exchange_declare(self.topology.exchange, exchange_type="topic", durable=True)
            for spec in self.topology.all_queues():
                ch.queue_declare(spec.name, durable=spec.durable, arguments=spec.arguments)
                for key in spec.bindings:
                    ch.queue_bind(spec.name, self.topology.exchange, routing_key=key)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BrokerError(
                f"broker refused the topology ({exc.reply_code} {exc.reply_text}); a queue "
                "exists with other arguments: delete it or restore its old settings"
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise BrokerError(f"broker {self._url_text}: lost while declaring ({exc!r})") from None
        finally:
            if conn.is_open:
                conn.close()

    def delete_topology(self) -> None:
        """Remove this cluster's exchange and queues (tests; `init --reset`)."""
        conn = self._connect(heartbeat=self.call_heartbeat)
        try:
            ch = conn.channel()
            for spec in self.topology.all_queues():
                ch.queue_delete(spec.name)
            ch.exchange_delete(self.topology.exchange)
        finally:
            if conn.is_open:
                conn.close()

    # -- publishing --------------------------------------------------------------
    @staticmethod
    def _properties(headers: dict[str, Any] | None, routing_key: str) -> pika.BasicProperties:
        return pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            headers=headers or {},
            timestamp=int(time.time()),
            type=routing_key,
        )

    def _publish(
        self, exchange: str, routing_key: str, body: bytes, headers: dict[str, Any] | None
    ) -> None:
        for attempt in (1, 2):
            try:
                self._publisher().basic_publish(
                    exchange,
                    routing_key,
                    body,
                    self._properties(headers, routing_key),
                    mandatory=True,
                )
                return
            except pika.exceptions.UnroutableError:
                raise BrokerError(
                    f"no queue receives {routing_key!r} on {self.topology.exchange}; "
                    "run `pgvault init` to declare the topology"
                ) from None
            except pika.exceptions.NackError:
                raise BrokerError(f"broker rejected {routing_key!r} (nack)") from None
            except pika.exceptions.ChannelClosedByBroker as exc:
                self._reset_publisher()
                if exc.reply_code == 404:
                    raise BrokerError(
                        f"exchange {exchange or '(default)'} does not exist; run `pgvault init` "
                        "to declare the topology"
                    ) from None
                raise BrokerError(f"broker closed the channel: {exc.reply_text}") from None
            except (BrokerError, *_CONNECTION_ERRORS) as exc:
                self._reset_publisher()
                if attempt == 2:
                    if isinstance(exc, BrokerError):
                        raise
                    raise BrokerError(
                        f"broker {self._url_text}: publish failed ({exc!r})"
                    ) from None
        raise AssertionError("unreachable")

    def publish(self, routing_key: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        self._publish(self.topology.exchange, routing_key, body, headers)

    # -- consuming ---------------------------------------------------------------
    def consume(
        self,
        stage: str,
        handler: Handler,
        *,
        once: bool = False,
        stop: threading.Event | None = None,
    ) -> ConsumeStats:
        stop = stop or threading.Event()
        stats = ConsumeStats()
        backoff = 1.0
        self.topology.queue(stage)  # validates the stage name
        self._down = False
        while not stop.is_set():
            try:
                self._session(stage, handler, once, stop, stats)
                return stats
            except (BrokerError, *_CONNECTION_ERRORS) as exc:
                # one line per state change: down (then retrying quietly), back
                (log.debug if self._down else log.warning)(
                    "stage %s: broker connection lost (%s); reconnecting with backoff "
                    "(next in %.0fs)",
                    stage,
                    exc,
                    backoff,
                )
                self._down = True
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        return stats

    def _session(
        self, stage: str, handler: Handler, once: bool, stop: threading.Event, stats: ConsumeStats
    ) -> None:
        conn = self._connect(heartbeat=self.heartbeat)
        if self._down:
            log.warning("stage %s: broker reachable again", stage)
            self._down = False
        session = _ConsumerSession(self, conn, stage, handler, stats)
        try:
            session.run(once, stop)
        finally:
            session.pool.shutdown(wait=True)  # a lost connection still lets handlers finish
            if conn.is_open:
                with contextlib.suppress(Exception):
                    conn.close()

    @staticmethod
    def _outcome(fut: Future[Disposition]) -> Disposition:
        try:
            return fut.result()
        except Exception as exc:  # handlers should not raise; never lose the message
            log.exception("handler raised instead of returning a disposition")
            return Retry(0, f"handler crashed: {exc!r}")

    def _settle(
        self,
        ch: BlockingChannel,
        stage: str,
        tag: int,
        delivery: Delivery,
        disposition: Disposition,
    ) -> None:
        parked = parking(self.topology, stage, delivery, disposition)
        if parked is not None:
            queue, headers = parked
            ch.basic_publish(
                "",
                queue,
                delivery.body,
                self._properties(headers, delivery.routing_key),
                mandatory=True,
            )
        ch.basic_ack(tag)

    def _count(self, ch: BlockingChannel, queue: str) -> tuple[int, int]:
        frame = ch.queue_declare(queue, passive=True)
        return int(frame.method.message_count), int(frame.method.consumer_count)

    def _drained(self, ch: BlockingChannel, stage: str) -> bool:
        names = [self.topology.queue(stage)]
        names += [self.topology.retry_queue(stage, d) for d in self.topology.retry_delays]
        return all(self._count(ch, name)[0] == 0 for name in names)

    def queue_depths(self) -> list[QueueDepth]:
        conn = self._connect(heartbeat=self.call_heartbeat)
        depths = []
        try:
            ch = conn.channel()
            for spec in self.topology.all_queues():
                try:
                    messages, consumers = self._count(ch, spec.name)
                except pika.exceptions.ChannelClosedByBroker:
                    ch = conn.channel()  # 404: queue absent
                    continue
                depths.append(QueueDepth(spec.name, messages, consumers))
        finally:
            if conn.is_open:
                conn.close()
        return depths

    def take(self, queue: str, limit: int = 100) -> list[Delivery]:
        """Remove and return up to `limit` messages from a queue (tests and triage)."""
        conn = self._connect(heartbeat=self.call_heartbeat)
        out = []
        try:
            ch = conn.channel()
            for _ in range(limit):
                method, props, body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                out.append(Delivery(body, method.routing_key, dict(props.headers or {})))
        finally:
            if conn.is_open:
                conn.close()
        return out


class _ConsumerSession:
    """One connection's worth of consuming: the I/O loop in this thread, handlers in a
    pool, each message settled on this thread as soon as its handler is done."""

    def __init__(
        self,
        broker: RabbitBroker,
        conn: pika.BlockingConnection,
        stage: str,
        handler: Handler,
        stats: ConsumeStats,
    ) -> None:
        self.broker = broker
        self.conn = conn
        self.stage = stage
        self.handler = handler
        self.stats = stats
        self.pool = ThreadPoolExecutor(
            max_workers=broker.prefetch, thread_name_prefix=f"pgvault-{stage}"
        )
        self.inflight: dict[int, tuple[Delivery, Future[Disposition]]] = {}
        self.ch = conn.channel()
        self.ch.confirm_delivery()
        self.ch.basic_qos(prefetch_count=broker.prefetch)

    def _settle(self, tag: int) -> None:
        delivery, fut = self.inflight.pop(tag)
        disposition = self.broker._outcome(fut)
        self.broker._settle(self.ch, self.stage, tag, delivery, disposition)
        self.stats.add(disposition)

    def _handler_done(self, tag: int, _fut: Future[Disposition]) -> None:
        """Runs in the handler thread: hand settling over to the connection's thread."""
        self.conn.add_callback_threadsafe(functools.partial(self._settle, tag))

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        tag = int(method.delivery_tag)
        delivery = Delivery(
            body, method.routing_key, dict(props.headers or {}), bool(method.redelivered)
        )
        if delivery.redelivered:
            log.info(
                "stage %s: redelivered message %s (a previous consumer did not finish it)",
                self.stage,
                method.routing_key,
            )
        fut = self.pool.submit(self.handler, delivery)
        self.inflight[tag] = (delivery, fut)
        fut.add_done_callback(functools.partial(self._handler_done, tag))

    def run(self, once: bool, stop: threading.Event) -> None:
        queue = self.broker.topology.queue(self.stage)
        try:
            tag = self.ch.basic_consume(queue, self._on_message)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BrokerError(
                f"cannot consume {queue}: {exc.reply_text}; run `pgvault init`"
            ) from None
        log.info("stage %s: consuming %s", self.stage, queue)
        cancelled = False
        idle_since: float | None = None
        last_probe = 0.0
        while True:
            self.conn.process_data_events(time_limit=0.25)
            if stop.is_set() and not cancelled:
                self.ch.basic_cancel(tag)
                cancelled = True
            if cancelled and not self.inflight:
                return
            if once and not self.inflight and time.monotonic() - last_probe > 0.25:
                last_probe = time.monotonic()
                if self.broker._drained(self.ch, self.stage):
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= DRAIN_GRACE_S:
                        stop.set()
                else:
                    idle_since = None
