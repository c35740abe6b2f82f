"""`python -m bookmesh_notification`: the wiring. Reads the environment, starts the gRPC server
(health NOT_SERVING), opens and migrates the store (then SERVING), consumes the rental events,
reminds, prunes; on SIGTERM or SIGINT drains as the Rust services do (docs/server-runtime.md):
NOT_SERVING at once, BOOKMESH_DRAIN_DELAY, no new connections, watch and health streams ended
(UNAVAILABLE), in-flight calls given BOOKMESH_SHUTDOWN_GRACE, exit 0.

Every long-lived task is supervised (readiness.py): each catches and logs what goes wrong in
one round and goes on, and one that ends anyway fails the service (NOT_SERVING, not live).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from . import consumer, reminders, server, telemetry
from .api import NotificationService
from .auth import Authorizer, Policy, PolicyError, SpiffeId, TokenVerifier, is_known
from .config import WORKLOAD, Config, ConfigError
from .readiness import Readiness
from .stack import ServerStack
from .store import NoticeStore, StoreError, StoreUnavailable, from_config
from .tls import FrontOnly, TlsFront
from .watch import NoticeHub, Watchers

log = logging.getLogger("bookmesh_notification")


class StartupError(Exception):
    """Something the operator must fix; one line on stderr, exit 1."""


def _authorizer(config: Config) -> Authorizer:
    try:
        policy = Policy.parse(config.authz_policy.read_text(encoding="utf-8"), is_known)
    except OSError as error:
        raise StartupError(f"authorization policy: {config.authz_policy}: {error.strerror}") from error
    except PolicyError as error:
        raise StartupError(str(error)) from error
    try:
        if config.token_jwks_url:
            tokens = TokenVerifier.from_jwks_url(
                config.token_jwks_url, config.token_keys_refresh, config.token_issuer, config.token_audience
            )
        else:
            tokens = TokenVerifier.from_file(config.token_key_file, config.token_issuer, config.token_audience)
    except (OSError, ValueError) as error:
        raise StartupError(f"token keys: {config.token_jwks_url or config.token_key_file}: {error}") from error
    own = SpiffeId(config.trust_domain, config.namespace, WORKLOAD)
    return Authorizer(WORKLOAD, own, policy, tokens)


async def _keep_ready(store: NoticeStore, readiness: Readiness, interval: float) -> None:
    """Opens and migrates the store (retrying until it answers), then checks it every
    `interval`: readiness, and so health, follows. Whatever fails is logged and tried again:
    this task must not end before the service does."""
    opened, backoff = False, 0.1
    while not readiness.stopping.is_set():
        try:
            if not opened:
                await store.open()
                opened = True
                log.info("store ready")
            else:
                await store.ping()
            await readiness.set_serving(True)
        except StoreUnavailable as error:
            log.warning("store unavailable", extra={"error": str(error)})
            await readiness.set_serving(False)
        except StoreError as error:
            log.error("the store answers with an error", extra={"error": str(error)})
            await readiness.set_serving(False)
        except Exception:  # noqa: BLE001 - a bug or the unforeseen: not ready, and said why
            log.exception("the store check failed")
            await readiness.set_serving(False)
        if await readiness.sleep(interval if opened else backoff):
            return
        backoff = min(backoff * 2, interval)


async def run(config: Config) -> int:
    readiness = Readiness()
    store = from_config(config)
    hub = NoticeHub()
    authorizer = None if config.insecure_plaintext else _authorizer(config)
    if authorizer is None:
        log.warning(
            "INSECURE: plaintext without identities (BOOKMESH_INSECURE_PLAINTEXT); anyone who reaches "
            "the port can call anything. Development only."
        )

    front: TlsFront | None = None
    interceptors: list = []
    if authorizer is not None:
        # The gRPC server listens on loopback behind the TLS front: a call on any other
        # connection (a local process dialing the port) skipped TLS and is refused.
        interceptors.append(FrontOnly(lambda peer: front is not None and front.peer_of(peer) is not None))
    stack = ServerStack(
        server.SERVICE_NAME,
        readiness,
        authorizer,
        lambda peer: front.peer_of(peer) if front is not None else None,
        config.request_timeout,
        config.max_concurrent_requests,
    )
    api = NotificationService(store, Watchers(store, hub, readiness, config.max_notice_watchers))
    grpc_server, health = server.build(config, readiness, api, [*interceptors, stack])
    await server.follow_readiness(health, readiness)

    host, port = config.listen
    if authorizer is None:
        bound = grpc_server.add_insecure_port(f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")
        if bound == 0:
            raise StartupError(f"cannot listen on {host}:{port}")
        await grpc_server.start()
    else:
        # TLS ends in this process (tls.py); the gRPC server listens on loopback only.
        backend = grpc_server.add_insecure_port("127.0.0.1:0")
        await grpc_server.start()
        try:
            front = TlsFront(config, backend)
        except (OSError, ValueError) as error:
            await grpc_server.stop(None)
            raise StartupError(
                f"cannot load credentials ({config.certificate}, {config.private_key}, {config.authorities}): {error}"
            ) from error
        try:
            bound = await front.start()
        except OSError as error:
            await grpc_server.stop(None)
            raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}") from error
    log.info(
        "gRPC listening",
        extra={
            "address": f"{host}:{bound}",
            "mode": "plaintext" if authorizer is None else "mTLS",
            "service": server.SERVICE_NAME,
        },
    )

    admin = None
    if config.admin_listen is not None:
        from .admin import AdminServer

        admin = AdminServer(config.admin_listen, readiness)
        try:
            await admin.start()
        except OSError as error:
            await grpc_server.stop(None)
            raise StartupError(f"cannot listen on {config.admin_listen}: {error.strerror}") from error

    processor = consumer.Processor(store, hub)
    if config.event_transport == "nats":
        consuming = consumer.run_nats(processor, config, readiness)
    else:
        consuming = consumer.run_feed(processor, store, config, readiness)
    tasks = [
        asyncio.create_task(_keep_ready(store, readiness, config.readiness_interval), name="readiness"),
        asyncio.create_task(consuming, name="consumer"),
        asyncio.create_task(reminders.run_reminders(store, hub, readiness, config.reminder_interval), name="reminders"),
    ]
    if config.prune_interval > 0:  # 0: never prune
        pruning = reminders.run_pruning(
            store, readiness, config.prune_interval, config.inbox_retention, config.notice_retention
        )
        tasks.append(asyncio.create_task(pruning, name="pruning"))
    if front is not None:
        tasks.append(asyncio.create_task(front.watch_files(readiness.stopping), name="credentials"))
    for task in tasks:
        readiness.supervise(task)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info("stop signal: draining", extra={"grace_seconds": config.shutdown_grace})
    await readiness.mark_stopping()  # NOT_SERVING; watch streams, health watches and tasks end
    if config.drain_delay > 0:
        await asyncio.sleep(config.drain_delay)
    if front is not None:
        front.stop_accepting()
    await grpc_server.stop(config.shutdown_grace)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if front is not None:
        await front.close()
    if admin is not None:
        await admin.close()
    await store.close()
    log.info("stopped")
    return 0


def main() -> int:
    try:
        config = Config.from_env()
    except ConfigError as error:
        print(f"notification: {error}", file=sys.stderr)
        return 2
    telemetry.init_logging(config.log_format, config.log_level)
    tracing = telemetry.init_tracing()
    log.info("starting", extra={"config": config.described(), "otlp": tracing.exporting})
    try:
        return asyncio.run(run(config))
    except StartupError as error:
        log.error(str(error))
        return 1
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    sys.exit(main())
