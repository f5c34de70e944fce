//! Redis streams: `XADD KEY [MAXLEN ~ N] * webhook-id … webhook-timestamp … webhook-signature …
//! body …`, answered by the entry id Redis gives it. A consumer reads the stream with `XREAD`
//! or a consumer group, and verifies `body` with the three other fields exactly as a webhook
//! receiver verifies the headers.

use std::net::SocketAddr;

use redis::IntoConnectionInfo;
use redis::aio::MultiplexedConnection;

use super::{Failure, Signed};
use crate::webhooks::destination::Broker;

/// A multiplexed connection.
#[derive(Clone)]
pub struct Link {
    connection: MultiplexedConnection,
}

impl Link {
    /// Connects to the checked address, with the URL's credentials and database.
    pub async fn connect(address: SocketAddr, broker: &Broker, db: i64) -> Result<Self, String> {
        let mut redis_settings = redis::RedisConnectionInfo::default().set_db(db);
        if let Some(user) = &broker.user {
            redis_settings = redis_settings.set_username(user);
        }
        if let Some(password) = &broker.password {
            redis_settings = redis_settings.set_password(password);
        }
        let info = redis::ConnectionAddr::Tcp(address.ip().to_string(), address.port())
            .into_connection_info()
            .map_err(|e| format!("connection failed: {}", describe(&e)))?
            .set_redis_settings(redis_settings);
        let client = redis::Client::open(info).map_err(|e| format!("connection failed: {}", describe(&e)))?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("connection failed: {}", describe(&e)))?;
        Ok(Self { connection })
    }

    /// Adds the event to the stream.
    pub async fn publish(&self, stream: &str, maxlen: Option<u64>, message: &Signed<'_>) -> Result<String, Failure> {
        let mut command = redis::cmd("XADD");
        command.arg(stream);
        if let Some(n) = maxlen {
            command.arg("MAXLEN").arg("~").arg(n);
        }
        command
            .arg("*")
            .arg("webhook-id")
            .arg(message.id)
            .arg("webhook-timestamp")
            .arg(message.timestamp)
            .arg("webhook-signature")
            .arg(message.signature)
            .arg("body")
            .arg(message.body);
        let mut connection = self.connection.clone();
        match command.query_async::<String>(&mut connection).await {
            Ok(id) => Ok(format!("stream {stream} entry {id}")),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                Err(Failure::Broken(format!("connection failed: {}", describe(&e))))
            }
            Err(e) => Err(Failure::Refused(format!("refused: {}", describe(&e)))),
        }
    }
}

/// The error: its kind and detail (never the connection's settings).
fn describe(e: &redis::RedisError) -> String {
    match e.detail() {
        Some(detail) => format!("{:?}: {detail}", e.kind()),
        None => format!("{:?}", e.kind()),
    }
}
