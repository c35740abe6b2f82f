//! The NATS JetStream transport, for Kubernetes and anything past one machine.
//!
//! - One stream per producer (`<PREFIX>_<PRODUCER>`, subject `<prefix>.<producer>.events`),
//!   created by the producer.
//! - A publisher task per producer forwards its published outbox, in feed order, to the stream,
//!   waiting for each JetStream ack before moving its cursor. A crash between the publish and
//!   the cursor update republishes the event on restart; JetStream drops the copy by its
//!   `Nats-Msg-Id` (the event id) within the duplicate window, and consumers' inboxes would
//!   ignore it anyway.
//! - A durable pull consumer per consuming service, shared by its replicas (competing
//!   consumers). One message is in flight per consumer (`max_ack_pending = 1`), which keeps the
//!   producer's order; a message is acknowledged only after its effect committed (or it was
//!   dead-lettered), so a crash redelivers it and the inbox makes the redelivery a no-op.
//!
//! The message body is the same encoded `bookmesh.events.v1.Event` envelope the feed sends.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use prost::Message as _;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::watch;

use super::consumer::{Processor, advance_cursor, cursor_position};
use super::envelope::Event;
use super::outbox::envelope;
use super::tables::outbox;
use crate::config::{EventArgs, EventTransport};
use crate::readiness::Readiness;

/// How long the server waits for a delivered message's ack before redelivering it: what a
/// crashed replica costs. A step that runs longer sends "in progress" acks every half of it.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Where JetStream is and how streams are named.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// The NATS server, `nats://host:port`, with this service's own user and password
    /// (`nats://rental:…@host:port`) where the server checks them.
    pub url: String,
    /// The authority the server's certificate must chain to; set, the connection must be TLS.
    pub ca: Option<std::path::PathBuf>,
    /// Prefix of stream names and subjects; tests use a unique one each.
    pub prefix: String,
    /// Set when each replica keeps its own copy of the consumer's state (a read model in the
    /// pod): the replica then reads every event through its own durable consumer instead of
    /// competing with its siblings for a shared one.
    pub replica: Option<String>,
    /// Limits of the producer's stream: the server drops the oldest events past them, so a
    /// stream does not grow without a bound (the outbox's retention, on the broker).
    pub limits: StreamLimits,
}

/// How much of its history a producer's stream keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Events older than this are dropped.
    pub max_age: Duration,
    /// Past this many bytes, the oldest events are dropped.
    pub max_bytes: i64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 86_400),
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl NatsSettings {
    /// The JetStream settings when `args` choose the NATS transport.
    pub fn from_args(args: &EventArgs) -> Option<Self> {
        (args.event_transport == EventTransport::Nats).then(|| Self {
            url: args.nats_url.clone(),
            ca: args.nats_ca.clone(),
            prefix: args.nats_prefix.clone(),
            replica: args.nats_replica_consumer.clone(),
            limits: StreamLimits {
                max_age: args.nats_max_age,
                max_bytes: args.nats_max_bytes,
            },
        })
    }

    /// The durable consumer `consumer` reads through: the service's shared one, or this
    /// replica's own (`<consumer>-<replica>`, with characters NATS forbids in names replaced).
    pub fn durable_name(&self, consumer: &str) -> String {
        match &self.replica {
            None => consumer.to_owned(),
            Some(replica) => {
                let replica: String = replica
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect();
                format!("{consumer}-{replica}")
            }
        }
    }

    /// The user and password in the URL (`nats://user:password@host`, percent-encoded), if
    /// any.
    pub fn credentials(&self) -> Option<(String, String)> {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, rest)| rest);
        let (credentials, _host) = rest.rsplit_once('@')?;
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        (!user.is_empty()).then(|| (percent_decoded(user), percent_decoded(password)))
    }

    /// The stream `producer` publishes to: `<PREFIX>_<PRODUCER>`.
    pub fn stream_name(&self, producer: &str) -> String {
        format!("{}_{}", self.prefix.to_uppercase(), producer.to_uppercase())
    }

    /// The subject of `producer`'s events: `<prefix>.<producer>.events`.
    pub fn subject(&self, producer: &str) -> String {
        format!("{}.{}.events", self.prefix.to_lowercase(), producer)
    }
}

async fn connect(
    settings: &NatsSettings,
    stopping: &mut watch::Receiver<bool>,
) -> Option<jetstream::Context> {
    let mut backoff = Duration::from_millis(100);
    let url = crate::config::mask_url_password(&settings.url);
    loop {
        let mut options = async_nats::ConnectOptions::new();
        if let Some((user, password)) = settings.credentials() {
            // async-nats does not send the URL's user and password itself.
            options = options
                .user_and_password(user.clone(), password)
                // Replies (JetStream acknowledgements, the events a pull fetches) come back on
                // an inbox only this user may read; the broker's permissions say so.
                .custom_inbox_prefix(format!("_INBOX_{user}"));
        }
        if let Some(ca) = &settings.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match options.connect(settings.url.as_str()).await {
            Ok(client) => return Some(jetstream::new(client)),
            Err(error) => {
                tracing::warn!(%url, %error, retry_in = ?backoff, "cannot reach NATS");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {},
            _ = stopping.changed() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    settings: &NatsSettings,
    producer: &str,
) -> Result<stream::Stream, async_nats::Error> {
    let config = stream::Config {
        name: settings.stream_name(producer),
        subjects: vec![settings.subject(producer)],
        // Long enough for any restart; consumers' inboxes cover the rest.
        duplicate_window: Duration::from_secs(120),
        storage: stream::StorageType::File,
        // Bounded, oldest dropped first: a consumer further behind than this has lost events
        // and must rebuild (docs/reliability.md).
        max_age: settings.limits.max_age,
        max_bytes: settings.limits.max_bytes,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    let mut stream = js.get_or_create_stream(config.clone()).await?;
    let current = &stream.cached_info().config;
    if current.max_age != config.max_age || current.max_bytes != config.max_bytes {
        // A stream made before the limits (or with others): bring it to the configured ones.
        tracing::info!(stream = %config.name, max_age = ?config.max_age, max_bytes = config.max_bytes, "updating the stream's limits");
        js.update_stream(&config).await?;
        stream = js.get_stream(&config.name).await?;
    }
    Ok(stream)
}

/// Forwards the producer's published outbox to JetStream until the service stops.
pub async fn run_publisher(
    db: DatabaseConnection,
    producer: &'static str,
    settings: NatsSettings,
    mut published: watch::Receiver<i64>,
    readiness: Readiness,
) {
    readiness.started().await;
    let mut stopping = readiness.stopping_signal();
    let Some(js) = connect(&settings, &mut stopping).await else {
        return;
    };
    let key = format!("jetstream:{producer}");
    let subject = settings.subject(producer);
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stopping.borrow() {
            return;
        }
        let round: Result<usize, async_nats::Error> = async {
            ensure_stream(&js, &settings, producer).await?;
            let after = cursor_position(&db, &key).await?;
            let rows = outbox::Entity::find()
                .filter(outbox::Column::FeedSequence.gt(after))
                .order_by_asc(outbox::Column::FeedSequence)
                .limit(100)
                .all(&db)
                .await?;
            let count = rows.len();
            for row in rows {
                let event = envelope(producer, row);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", event.event_id.as_str());
                js.publish_with_headers(subject.clone(), headers, event.encode_to_vec().into())
                    .await?
                    .await?;
                // Only after JetStream stored it: a crash before this line republishes it.
                advance_cursor(&db, &key, event.sequence).await?;
            }
            Ok(count)
        }
        .await;
        match round {
            Ok(0) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    _ = published.changed() => {},
                    _ = stopping.changed() => {},
                    () = tokio::time::sleep(Duration::from_millis(500)) => {},
                }
            }
            Ok(_) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(producer, %error, retry_in = ?backoff, "publishing to JetStream failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How long a replica's own durable consumer survives without a pull (see
/// [`NatsSettings::replica`]).
const REPLICA_CONSUMER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(15 * 60);

/// Consumes `producer`'s stream with a durable consumer named after the consuming service
/// (or after this replica, see [`NatsSettings::replica`]), until the service stops.
pub async fn run_consumer(
    processor: Arc<Processor>,
    settings: NatsSettings,
    consumer: String,
    producer: String,
    readiness: Readiness,
) {
    readiness.started().await;
    let mut stopping = readiness.stopping_signal();
    let Some(js) = connect(&settings, &mut stopping).await else {
        return;
    };
    let durable_name = settings.durable_name(&consumer);
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stopping.borrow() {
            return;
        }
        let messages = async {
            // The producer creates its stream; a consumer may only read it (its NATS user has
            // no right to create or change it), so it waits for it.
            let stream = js.get_stream(settings.stream_name(&producer)).await?;
            let durable = stream
                .get_or_create_consumer(
                    &durable_name,
                    pull::Config {
                        durable_name: Some(durable_name.clone()),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        // A crashed replica's in-flight message is redelivered after this.
                        ack_wait: ACK_WAIT,
                        max_ack_pending: 1,
                        // A replica's own consumer outlives a restart of its container, but
                        // not the replica: the server deletes it once nobody pulled for this
                        // long (a replacement pod has another name and replays the stream).
                        inactive_threshold: if settings.replica.is_some() {
                            REPLICA_CONSUMER_INACTIVE_THRESHOLD
                        } else {
                            Duration::ZERO
                        },
                        ..Default::default()
                    },
                )
                .await?;
            Ok::<_, async_nats::Error>(durable.messages().await?)
        }
        .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%producer, %consumer, %error, retry_in = ?backoff, "cannot consume from JetStream");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        tracing::info!(%producer, %consumer, "consuming from JetStream");
        backoff = Duration::from_millis(100);
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = stopping.changed() => return,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(%producer, %error, "JetStream delivery failed; resubscribing");
                    break;
                }
                None => break,
            };
            let event = match Event::decode(message.payload.as_ref()) {
                Ok(event) => event,
                Err(error) => {
                    // Not an envelope: nothing any retry could fix. Logged and acknowledged.
                    tracing::error!(%producer, %error, "undecodable message on the event stream; dropped");
                    let _ = message.ack().await;
                    continue;
                }
            };
            if event.producer != producer {
                // Only the producer may publish on its subject (NATS permissions); an envelope
                // that names another producer is refused, whoever got it there.
                tracing::error!(
                    %producer,
                    claimed = %event.producer,
                    event_id = %event.event_id,
                    "an envelope on this stream claims another producer; refused"
                );
                crate::metrics::CONSUMER_EVENTS
                    .with_label_values(&[processor.subscription().as_str(), "refused"])
                    .inc();
                let _ = message.ack().await;
                continue;
            }
            // A step may take longer than the ack wait (a slow database, retries with
            // backoff): "in progress" acks keep the server from redelivering it meanwhile (to
            // this replica later, or to another one now).
            let processed = processor.process(&event);
            tokio::pin!(processed);
            let mut progress =
                tokio::time::interval_at(tokio::time::Instant::now() + ACK_WAIT / 2, ACK_WAIT / 2);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut processed => break outcome,
                    _ = progress.tick() => {
                        if let Err(error) = message.ack_with(jetstream::AckKind::Progress).await {
                            tracing::debug!(event_id = %event.event_id, %error, "progress ack failed");
                        }
                    }
                }
            };
            match outcome {
                Ok(_) => {
                    if let Err(error) = message.ack().await {
                        // Redelivered later; the inbox makes that a no-op.
                        tracing::warn!(event_id = %event.event_id, %error, "ack failed");
                    }
                }
                Err(error) => {
                    tracing::warn!(event_id = %event.event_id, %error, "cannot record the outcome; redelivery requested");
                    let _ = message
                        .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
        }
    }
}

/// `text` with its `%XX` escapes decoded (what a URL's user and password may contain).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credentials_come_from_the_url() {
        let settings = |url: &str| NatsSettings {
            url: url.into(),
            ca: None,
            prefix: "bookmesh".into(),
            replica: None,
            limits: StreamLimits::default(),
        };
        let pair = |user: &str, password: &str| Some((user.to_owned(), password.to_owned()));
        assert_eq!(
            settings("nats://book:secret@nats:4222").credentials(),
            pair("book", "secret")
        );
        assert_eq!(settings("nats://nats:4222").credentials(), None);
        assert_eq!(
            settings("tls://rental@nats:4222").credentials(),
            pair("rental", "")
        );
        assert_eq!(
            settings("nats://member:p%40ss%3Aword@nats:4222").credentials(),
            pair("member", "p@ss:word")
        );
    }
}
