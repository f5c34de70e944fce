//! RabbitMQ: a publish with publisher confirms, `persistent` (delivery mode 2) and
//! `mandatory`, `message_id` the event id, `content_type` `application/json`, and the
//! Standard Webhooks headers as AMQP headers. The broker's confirm is the answer; a message
//! no queue takes comes back (basic.return) and the attempt fails, naming the exchange and
//! routing key. A missing exchange closes the channel: that attempt fails, and the next one
//! opens a new connection.

use std::net::SocketAddr;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::{Failure, Signed};
use crate::webhooks::destination::Broker;

/// A confirming channel on one connection.
#[derive(Clone)]
pub struct Link {
    channel: Channel,
    /// Kept so the connection lives as long as the link.
    _connection: std::sync::Arc<Connection>,
}

impl Link {
    /// Connects to the checked address, logs in to `vhost` and puts a channel into confirm
    /// mode.
    pub async fn connect(address: SocketAddr, broker: &Broker, vhost: &str) -> Result<Self, String> {
        let uri = AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: broker.user.clone().unwrap_or_else(|| "guest".into()),
                    password: broker.password.clone().unwrap_or_else(|| "guest".into()),
                },
                host: address.ip().to_string(),
                port: address.port(),
            },
            vhost: vhost.to_string(),
            query: AMQPQueryString::default(),
        };
        let properties = ConnectionProperties::default().with_connection_name("botlinkd".into());
        let connection = Connection::connect_uri(uri, properties)
            .await
            .map_err(|e| format!("connection failed: {e}"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel failed: {e}"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("turning on publisher confirms failed: {e}"))?;
        Ok(Self {
            channel,
            _connection: std::sync::Arc::new(connection),
        })
    }

    /// Publishes and waits for the confirm.
    pub async fn publish(&self, exchange: &str, routing_key: &str, message: &Signed<'_>) -> Result<String, Failure> {
        let mut headers = FieldTable::default();
        headers.insert("webhook-id".into(), AMQPValue::LongString(message.id.into()));
        headers.insert(
            "webhook-timestamp".into(),
            AMQPValue::LongString(message.timestamp.to_string().into()),
        );
        headers.insert(
            "webhook-signature".into(),
            AMQPValue::LongString(message.signature.into()),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message.id.into())
            .with_timestamp(message.timestamp.max(0) as u64)
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let confirmation = async {
            self.channel
                .basic_publish(exchange.into(), routing_key.into(), options, message.body, properties)
                .await?
                .await
        }
        .await
        .map_err(|e| Failure::Broken(format!("publish failed: {e}")))?;
        let shown_exchange = if exchange.is_empty() { "(default)" } else { exchange };
        match confirmation {
            Confirmation::Ack(None) => Ok(format!("confirmed by exchange {shown_exchange}")),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(Failure::Refused(format!(
                "unroutable: no queue is bound to exchange `{shown_exchange}` for routing key `{routing_key}` ({} {})",
                returned.reply_code, returned.reply_text
            ))),
            Confirmation::Nack(None) => Err(Failure::Refused("refused: the broker nacked the message".into())),
            Confirmation::NotRequested => Err(Failure::Broken("the channel is not in confirm mode".into())),
        }
    }
}
