//! Test-side clients of the real brokers this machine runs (NATS with JetStream on 4222,
//! RabbitMQ on 5672, Redis on 6379): each makes a stream, queue or key of its own, reads what
//! botlinkd publishes there as [`Received`] deliveries, and removes what it made when it is
//! dropped. A broker that is not running fails the test loudly.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use futures_util::StreamExt;
use serde_json::Value;

use crate::harness::{Received, Receiver};

pub const NATS: &str = "127.0.0.1:4222";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS: &str = "redis://127.0.0.1:6379/";

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &botlinkd::ids::api_key().to_lowercase().replace(['-', '_'], "")[..12]
    )
}

fn received(headers: Vec<(String, String)>, body: Vec<u8>) -> Received {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.to_lowercase()), HeaderValue::try_from(value)) {
            map.insert(name, value);
        }
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Received {
        status: StatusCode::OK,
        headers: map,
        body: Bytes::from(body),
        json,
    }
}

/// Runs `cleanup` on a runtime of its own (drop is not async).
fn run_detached<F: std::future::Future<Output = ()> + Send + 'static>(cleanup: F) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(cleanup);
    })
    .join();
}

/// A JetStream stream capturing one subject, and a consumer of it.
pub struct NatsStream {
    pub subject: String,
    name: String,
    pub receiver: Receiver,
    _task: tokio::task::JoinHandle<()>,
}

impl NatsStream {
    /// Makes the stream and reads it into `receiver`.
    pub async fn create() -> Self {
        let name = unique("BOTLINKD_TEST");
        let subject = format!("botlinkd.test.{}", name.to_lowercase());
        let client = async_nats::connect(NATS)
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream must be running on {NATS} for this test: {e}"));
        let jetstream = async_nats::jetstream::new(client);
        let stream = jetstream
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                ..Default::default()
            })
            .await
            .expect("create the JetStream stream");
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("create a consumer");
        let (receiver, feed) = Receiver::fed();
        let task = tokio::spawn(async move {
            let mut messages = consumer.messages().await.expect("consume");
            while let Some(Ok(message)) = messages.next().await {
                let headers = message
                    .headers
                    .iter()
                    .flat_map(|map| map.iter())
                    .flat_map(|(name, values)| values.iter().map(move |v| (name.to_string(), v.to_string())))
                    .collect();
                if feed.send(received(headers, message.payload.to_vec())).is_err() {
                    break;
                }
            }
        });
        Self {
            subject,
            name,
            receiver,
            _task: task,
        }
    }
}

impl Drop for NatsStream {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_detached(async move {
            if let Ok(client) = async_nats::connect(NATS).await {
                let _ = async_nats::jetstream::new(client).delete_stream(&name).await;
            }
        });
    }
}

/// A RabbitMQ direct exchange, optionally with a queue bound to it for one routing key.
pub struct RabbitExchange {
    pub exchange: String,
    pub routing_key: String,
    pub receiver: Receiver,
    _connection: lapin::Connection,
}

impl RabbitExchange {
    /// Makes the exchange, and with `bound` an exclusive queue bound to it, read into
    /// `receiver`.
    pub async fn create(bound: bool) -> Self {
        use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let connection = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ must be running at 127.0.0.1:5672 (guest/guest) for this test: {e}"));
        let channel = connection.create_channel().await.expect("channel");
        let exchange = unique("botlinkd_test");
        let routing_key = "whatsapp.events".to_string();
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare the exchange");
        let (receiver, feed) = Receiver::fed();
        if bound {
            let queue = format!("{exchange}_queue");
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("declare the queue");
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind the queue");
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "botlinkd-test".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            tokio::spawn(async move {
                while let Some(Ok(delivery)) = consumer.next().await {
                    let properties = &delivery.properties;
                    let mut headers: Vec<(String, String)> = properties
                        .headers()
                        .iter()
                        .flat_map(|table| table.inner().iter())
                        .filter_map(|(name, value)| match value {
                            lapin::types::AMQPValue::LongString(s) => Some((name.to_string(), s.to_string())),
                            _ => None,
                        })
                        .collect();
                    if let Some(id) = properties.message_id() {
                        headers.push(("amqp-message-id".into(), id.to_string()));
                    }
                    if let Some(kind) = properties.content_type() {
                        headers.push(("content-type".into(), kind.to_string()));
                    }
                    if let Some(mode) = properties.delivery_mode() {
                        headers.push(("amqp-delivery-mode".into(), mode.to_string()));
                    }
                    if feed.send(received(headers, delivery.data.clone())).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            exchange,
            routing_key,
            receiver,
            _connection: connection,
        }
    }
}

impl Drop for RabbitExchange {
    fn drop(&mut self) {
        // The test's runtime is blocked in this drop, so a connection of the cleanup's own.
        let exchange = self.exchange.clone();
        run_detached(async move {
            if let Ok(connection) = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await
                && let Ok(channel) = connection.create_channel().await
            {
                let _ = channel
                    .exchange_delete(
                        exchange.as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await;
                let _ = connection.close(200, "done".into()).await;
            }
        });
    }
}

/// A Redis stream key, read with `XREAD` into `receiver`.
pub struct RedisStream {
    pub key: String,
    pub receiver: Receiver,
    _task: tokio::task::JoinHandle<()>,
}

impl RedisStream {
    /// Starts reading a fresh key.
    pub async fn create() -> Self {
        let key = unique("botlinkd_test");
        let client = redis::Client::open(REDIS).expect("redis URL");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis must be running on 127.0.0.1:6379 for this test: {e}"));
        let (receiver, feed) = Receiver::fed();
        let stream_key = key.clone();
        let task = tokio::spawn(async move {
            let mut last = "0".to_string();
            loop {
                let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(200)
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg(&stream_key)
                    .arg(&last)
                    .query_async(&mut connection)
                    .await
                    .expect("XREAD");
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    last = entry.id.clone();
                    let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
                    let headers = vec![
                        ("webhook-id".to_string(), field("webhook-id")),
                        ("webhook-timestamp".to_string(), field("webhook-timestamp")),
                        ("webhook-signature".to_string(), field("webhook-signature")),
                    ];
                    let body = entry.get::<Vec<u8>>("body").unwrap_or_default();
                    if feed.send(received(headers, body)).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            key,
            receiver,
            _task: task,
        }
    }

    /// The stream's length.
    pub async fn len(&self) -> usize {
        let client = redis::Client::open(REDIS).expect("redis URL");
        let mut connection = client.get_multiplexed_async_connection().await.expect("redis");
        redis::cmd("XLEN")
            .arg(&self.key)
            .query_async(&mut connection)
            .await
            .expect("XLEN")
    }
}

impl Drop for RedisStream {
    fn drop(&mut self) {
        self._task.abort();
        let key = self.key.clone();
        run_detached(async move {
            if let Ok(client) = redis::Client::open(REDIS)
                && let Ok(mut connection) = client.get_multiplexed_async_connection().await
            {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query_async(&mut connection).await;
            }
        });
    }
}

/// A TCP proxy on loopback in front of a broker, whose connections the test can cut.
pub struct CuttableProxy {
    pub port: u16,
    cut: tokio::sync::watch::Sender<(u64, bool)>,
    _task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    /// Forwards a port of its own to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("address").port();
        let (cut, watch) = tokio::sync::watch::channel((0u64, false));
        let upstream = upstream.to_string();
        let task = tokio::spawn(async move {
            while let Ok((mut downstream, _)) = listener.accept().await {
                let (generation, refusing) = *watch.borrow();
                if refusing {
                    drop(downstream);
                    continue;
                }
                let upstream = upstream.clone();
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut downstream, &mut up) => {}
                        _ = watch.wait_for(|(g, _)| *g != generation) => {}
                    }
                });
            }
        });
        Self { port, cut, _task: task }
    }

    /// Cuts every connection and refuses new ones for `outage`.
    pub async fn cut_for(&self, outage: Duration) {
        self.cut.send_modify(|(generation, refusing)| {
            *generation += 1;
            *refusing = true;
        });
        tokio::time::sleep(outage).await;
        self.cut.send_modify(|(_, refusing)| *refusing = false);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self._task.abort();
    }
}
