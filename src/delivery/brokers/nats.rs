//! NATS JetStream: a publish with `Nats-Msg-Id` set to the event id (JetStream's duplicate
//! window then drops a re-send of the same event) and the Standard Webhooks headers, answered
//! by the stream's ack (`stream NAME sequence N`). A subject no stream captures gets no ack:
//! the attempt fails and says so.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::{ConnectOptions, HeaderMap};

use super::{Failure, Signed};
use crate::webhooks::destination::Broker;

/// A JetStream context on one connection.
#[derive(Clone)]
pub struct Link {
    jetstream: async_nats::jetstream::Context,
}

impl Link {
    /// Connects to the checked address, with the URL's credentials.
    pub async fn connect(address: SocketAddr, broker: &Broker, timeout: Duration) -> Result<Self, String> {
        let options = match (&broker.user, &broker.password) {
            (Some(user), Some(password)) => ConnectOptions::with_user_and_password(user.clone(), password.clone()),
            (Some(token), None) => ConnectOptions::with_token(token.clone()),
            _ => ConnectOptions::new(),
        };
        let client = options
            .name("botlinkd")
            .connection_timeout(timeout)
            // Servers a cluster advertises were never checked against the address policy.
            .ignore_discovered_servers()
            .connect(format!("nats://{address}"))
            .await
            .map_err(|e| format!("connection failed: {e}"))?;
        let mut jetstream = async_nats::jetstream::new(client);
        jetstream.set_timeout(timeout);
        Ok(Self { jetstream })
    }

    /// Publishes and waits for the stream's ack.
    pub async fn publish(&self, subject: &str, message: &Signed<'_>) -> Result<String, Failure> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.id);
        headers.insert("webhook-id", message.id);
        headers.insert("webhook-timestamp", message.timestamp.to_string().as_str());
        headers.insert("webhook-signature", message.signature);
        headers.insert("content-type", "application/json");
        let ack = async {
            self.jetstream
                .publish_with_headers(subject.to_string(), headers, message.body.to_vec().into())
                .await?
                .await
        }
        .await
        .map_err(|e| match e.kind() {
            PublishErrorKind::StreamNotFound => Failure::Refused(format!(
                "no JetStream stream captures subject `{subject}`: create a stream for it"
            )),
            PublishErrorKind::MaxPayloadExceeded => {
                Failure::Refused("refused: the event is larger than the server's max_payload".into())
            }
            PublishErrorKind::TimedOut => Failure::Broken("timeout: JetStream did not acknowledge in time".into()),
            _ => Failure::Broken(format!("publish failed: {e}")),
        })?;
        Ok(format!(
            "stream {} sequence {}{}",
            ack.stream,
            ack.sequence,
            if ack.duplicate {
                " (duplicate, dropped by the stream)"
            } else {
                ""
            }
        ))
    }
}
