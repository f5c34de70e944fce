//! What an endpoint URL's scheme chooses: an HTTP webhook, a NATS JetStream subject, a
//! RabbitMQ exchange or a Redis stream, with the broker-specific parts checked.
//!
//! | scheme | shape | default port |
//! |---|---|---|
//! | `http`, `https` | any URL, no credentials in it | 80, 443 |
//! | `nats` | `nats://[USER:PASS@]HOST[:PORT]/SUBJECT` | 4222 |
//! | `amqp` | `amqp://[USER:PASS@]HOST[:PORT][/VHOST]?exchange=E[&routing_key=K]` | 5672 |
//! | `redis` | `redis://[[USER]:PASS@]HOST[:PORT][/DB]?stream=KEY[&maxlen=N]` | 6379 |
//!
//! A NATS subject is dot-separated tokens without wildcards. An AMQP vhost is the
//! percent-decoded path (`/` when left out; `%2f` is `/` too); `exchange` must be given and
//! may be empty, the default exchange, which routes by queue name. Unknown query parameters
//! are refused rather than ignored, so a typo does not silently send somewhere else.
//! Broker credentials are secrets: [`masked`] replaces the password for display.

use url::Url;

use super::target::InvalidUrl;

/// Which transport an endpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// An HTTP `POST` (Standard Webhooks).
    Webhook,
    /// A publish to NATS JetStream.
    Nats,
    /// A publish to a RabbitMQ exchange.
    Rabbitmq,
    /// An `XADD` to a Redis stream.
    Redis,
}

impl DestinationKind {
    /// The kind a URL's text names, judged by its scheme alone (the hot path's check).
    pub fn of(url: &str) -> Self {
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("nats") => Self::Nats,
            Some("amqp") => Self::Rabbitmq,
            Some("redis") => Self::Redis,
            _ => Self::Webhook,
        }
    }

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Nats => "nats",
            Self::Rabbitmq => "rabbitmq",
            Self::Redis => "redis",
        }
    }
}

/// A broker's address and credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    /// Host name or IP address, as written.
    pub host: String,
    /// Port (the scheme's default when left out).
    pub port: u16,
    /// User name, if given.
    pub user: Option<String>,
    /// Password, if given.
    pub password: Option<String>,
}

/// Where and how a delivery goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `POST` to this URL.
    Http(Url),
    /// Publish to JetStream on this subject.
    Nats {
        /// The server.
        broker: Broker,
        /// The subject a stream captures.
        subject: String,
    },
    /// Publish to a RabbitMQ exchange, mandatory and persistent, with confirms.
    Amqp {
        /// The server.
        broker: Broker,
        /// The virtual host.
        vhost: String,
        /// The exchange (empty: the default exchange).
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// `XADD` to a Redis stream.
    Redis {
        /// The server.
        broker: Broker,
        /// The database number.
        db: i64,
        /// The stream's key.
        stream: String,
        /// `MAXLEN ~ N`, if given.
        maxlen: Option<u64>,
    },
}

impl Destination {
    /// Reads the destination from an absolute URL.
    pub fn parse(url: &Url) -> Result<Self, InvalidUrl> {
        let scheme = url.scheme();
        if matches!(scheme, "http" | "https") {
            if !url.username().is_empty() || url.password().is_some() {
                return Err(InvalidUrl::Credentials);
            }
            return Ok(Self::Http(url.clone()));
        }
        let default_port = match scheme {
            "nats" => 4222,
            "amqp" => 5672,
            "redis" => 6379,
            other => return Err(InvalidUrl::UnknownScheme(other.to_string())),
        };
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or(InvalidUrl::Malformed)?;
        let broker = Broker {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port: url.port().unwrap_or(default_port),
            user: Some(decode(url.username())).filter(|u| !u.is_empty()),
            password: url.password().map(decode),
        };
        let params = Params::of(url);
        match scheme {
            "nats" => {
                params.only(&[], "nats")?;
                let subject = decode(url.path().trim_start_matches('/'));
                check_subject(&subject)?;
                Ok(Self::Nats { broker, subject })
            }
            "amqp" => {
                params.only(&["exchange", "routing_key"], "amqp")?;
                let vhost = match decode(url.path().trim_start_matches('/')) {
                    v if v.is_empty() => "/".to_string(),
                    v => v,
                };
                let exchange = params.get("exchange").ok_or_else(|| {
                    bad("an amqp:// URL needs `?exchange=NAME` (empty for the default exchange, which routes by queue name)")
                })?;
                if exchange.len() > 255
                    || !exchange
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
                {
                    return Err(bad(
                        "the `exchange` name may have at most 255 letters, digits, '-', '_', '.' or ':'",
                    ));
                }
                let routing_key = params.get("routing_key").unwrap_or_default();
                if routing_key.len() > 255 {
                    return Err(bad("the `routing_key` may be at most 255 bytes"));
                }
                Ok(Self::Amqp {
                    broker,
                    vhost,
                    exchange,
                    routing_key,
                })
            }
            _ => {
                params.only(&["stream", "maxlen"], "redis")?;
                let db = match url.path().trim_start_matches('/') {
                    "" => 0,
                    n => n
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (0..=1_000_000).contains(n))
                        .ok_or_else(|| bad("the path of a redis:// URL is the database number, e.g. /0"))?,
                };
                let stream = params
                    .get("stream")
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| bad("a redis:// URL needs `?stream=KEY`, the stream events are added to"))?;
                if stream.len() > 512 {
                    return Err(bad("the `stream` key may be at most 512 bytes"));
                }
                let maxlen = match params.get("maxlen") {
                    None => None,
                    Some(n) => Some(
                        n.parse::<u64>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| bad("`maxlen` must be a whole number above 0"))?,
                    ),
                };
                Ok(Self::Redis {
                    broker,
                    db,
                    stream,
                    maxlen,
                })
            }
        }
    }

    /// The broker, for every kind but HTTP.
    pub fn broker(&self) -> Option<&Broker> {
        match self {
            Self::Http(_) => None,
            Self::Nats { broker, .. } | Self::Amqp { broker, .. } | Self::Redis { broker, .. } => Some(broker),
        }
    }
}

/// The URL with its password, if any, replaced by `****`: how the API, the portal and the
/// logs show a destination.
pub fn masked(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password only fails on URLs that cannot have one, which this has.
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn bad(message: &str) -> InvalidUrl {
    InvalidUrl::Destination(message.to_string())
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn check_subject(subject: &str) -> Result<(), InvalidUrl> {
    let valid = !subject.is_empty()
        && subject.len() <= 255
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, '*' | '>' | '/'))
        });
    if valid {
        Ok(())
    } else {
        Err(bad(
            "a nats:// URL needs a subject after the host, e.g. nats://HOST:4222/whatsapp.events: dot-separated tokens, no wildcards (* or >), no spaces",
        ))
    }
}

/// A URL's query parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(url: &Url) -> Self {
        Self(
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn only(&self, known: &[&str], scheme: &str) -> Result<(), InvalidUrl> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(InvalidUrl::Destination(format!(
                "{scheme}:// URLs take no `{k}` parameter{}",
                if known.is_empty() {
                    String::new()
                } else {
                    format!(" (known: {})", known.join(", "))
                }
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Destination, InvalidUrl> {
        Destination::parse(&Url::parse(s).unwrap())
    }

    fn refusal(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn each_scheme_reads_its_parts() {
        assert_eq!(
            parse("nats://u:p%40ss@nats.example.com/whatsapp.events").unwrap(),
            Destination::Nats {
                broker: Broker {
                    host: "nats.example.com".into(),
                    port: 4222,
                    user: Some("u".into()),
                    password: Some("p@ss".into())
                },
                subject: "whatsapp.events".into()
            }
        );
        let Destination::Amqp {
            vhost,
            exchange,
            routing_key,
            broker,
        } = parse("amqp://guest:guest@10.0.0.5:5673/%2f?exchange=botlinkd&routing_key=wa.events").unwrap()
        else {
            panic!("amqp")
        };
        assert_eq!(
            (vhost.as_str(), exchange.as_str(), routing_key.as_str(), broker.port),
            ("/", "botlinkd", "wa.events", 5673)
        );
        let Destination::Amqp { vhost, exchange, .. } = parse("amqp://h/shop?exchange=").unwrap() else {
            panic!("amqp")
        };
        assert_eq!((vhost.as_str(), exchange.as_str()), ("shop", ""));
        assert_eq!(
            parse("redis://:secret@[::1]/2?stream=wa&maxlen=1000").unwrap(),
            Destination::Redis {
                broker: Broker {
                    host: "::1".into(),
                    port: 6379,
                    user: None,
                    password: Some("secret".into())
                },
                db: 2,
                stream: "wa".into(),
                maxlen: Some(1000)
            }
        );
    }

    #[test]
    fn broken_destinations_are_refused_with_the_reason() {
        assert!(refusal("nats://h:4222").contains("subject"));
        assert!(refusal("nats://h:4222/a..b").contains("subject"));
        assert!(refusal("nats://h:4222/events.*").contains("wildcards"));
        assert!(refusal("nats://h/a?x=1").contains("`x`"));
        assert!(refusal("amqp://h/").contains("exchange"));
        assert!(refusal("amqp://h/?exchange=a%20b").contains("exchange"));
        assert!(refusal("amqp://h/?exchange=e&routing=k").contains("routing_key"));
        assert!(refusal("redis://h/0").contains("stream"));
        assert!(refusal("redis://h/zero?stream=s").contains("database"));
        assert!(refusal("redis://h/?stream=s&maxlen=0").contains("maxlen"));
        assert!(refusal("kafka://h/topic").contains("kafka"));
        assert!(matches!(parse("https://u:p@h/"), Err(InvalidUrl::Credentials)));
    }

    #[test]
    fn passwords_are_masked_and_nothing_else_changes() {
        assert_eq!(
            masked("amqp://guest:guest@h:5672/%2f?exchange=e"),
            "amqp://guest:****@h:5672/%2f?exchange=e"
        );
        assert_eq!(masked("redis://:pw@h/0?stream=s"), "redis://:****@h/0?stream=s");
        assert_eq!(masked("https://h/hook?token=abc"), "https://h/hook?token=abc");
        assert_eq!(DestinationKind::of("amqp://h/?exchange=e"), DestinationKind::Rabbitmq);
        assert_eq!(DestinationKind::of("https://h/"), DestinationKind::Webhook);
    }
}
