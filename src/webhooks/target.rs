//! Endpoint URLs: parsed at the boundary (the scheme chooses the transport, see
//! [`super::destination`]), and checked against the [`AddressPolicy`] by resolving the host
//! (web server or broker alike) when an endpoint is saved.

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

use super::AddressPolicy;
use super::destination::{Destination, DestinationKind};

/// An endpoint's URL: an absolute `http`/`https` URL without credentials in it, or a
/// well-formed `nats`, `amqp` or `redis` destination.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: Url,
    destination: Destination,
}

/// Why a URL cannot be a webhook target.
#[derive(Debug, thiserror::Error)]
pub enum InvalidUrl {
    /// Not a URL we can deliver to.
    #[error("`url` must be an absolute URL with a host: http://, https://, nats://, amqp:// or redis://")]
    Malformed,
    /// A scheme botlinkd does not deliver to.
    #[error("`url` scheme `{0}` is not supported: use http://, https://, nats://, amqp:// or redis://")]
    UnknownScheme(String),
    /// A broker URL missing or misspelling a part.
    #[error("`url`: {0}")]
    Destination(String),
    /// Credentials in the URL would end up in logs.
    #[error("`url` must not contain a user name or password; verify the webhook signature instead")]
    Credentials,
    /// Longer than we store.
    #[error("`url` may be at most 2048 characters")]
    TooLong,
    /// The host name does not resolve.
    #[error("`url` host `{0}` does not resolve")]
    Unresolvable(String),
    /// It points at an internal address.
    #[error(
        "`url` resolves to {0}, an internal address; webhooks may not target loopback, private, link-local or metadata addresses (an operator can allow a network with --webhook-allow-cidrs)"
    )]
    Blocked(IpAddr),
}

impl WebhookUrl {
    /// Parses and checks the shape.
    pub fn parse(input: &str) -> Result<Self, InvalidUrl> {
        if input.len() > 2048 {
            return Err(InvalidUrl::TooLong);
        }
        let url = Url::parse(input.trim()).map_err(|_| InvalidUrl::Malformed)?;
        if url.host().is_none() {
            return Err(InvalidUrl::Malformed);
        }
        let destination = Destination::parse(&url)?;
        Ok(Self { url, destination })
    }

    /// The URL.
    pub fn as_url(&self) -> &Url {
        &self.url
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// Which transport it chooses.
    pub fn kind(&self) -> DestinationKind {
        DestinationKind::of(self.url.as_str())
    }

    /// Resolves the host and refuses the URL if any address is not permitted.
    pub async fn check(&self, policy: &AddressPolicy) -> Result<(), InvalidUrl> {
        let port = match self.destination.broker() {
            Some(broker) => broker.port,
            None => self.url.port_or_known_default().unwrap_or(443),
        };
        let addresses: Vec<IpAddr> = match self.url.host() {
            Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| InvalidUrl::Unresolvable(name.to_string()))?
                .map(|a| a.ip())
                .collect(),
            None => return Err(InvalidUrl::Malformed),
        };
        if addresses.is_empty() {
            return Err(InvalidUrl::Unresolvable(
                self.url.host_str().unwrap_or_default().to_string(),
            ));
        }
        match addresses.into_iter().find(|ip| !policy.permits(*ip)) {
            Some(ip) => Err(InvalidUrl::Blocked(ip)),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::destination::masked(self.url.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(WebhookUrl::parse("https://example.com/hook").is_ok());
        assert!(matches!(
            WebhookUrl::parse("ftp://example.com"),
            Err(InvalidUrl::UnknownScheme(_))
        ));
        assert_eq!(
            WebhookUrl::parse("nats://127.0.0.1/wa.events").unwrap().kind(),
            DestinationKind::Nats
        );
        assert!(matches!(WebhookUrl::parse("not a url"), Err(InvalidUrl::Malformed)));
        assert!(matches!(
            WebhookUrl::parse("https://u:p@example.com"),
            Err(InvalidUrl::Credentials)
        ));
    }

    #[tokio::test]
    async fn internal_targets_are_refused_unless_allowed() {
        let url = WebhookUrl::parse("http://127.0.0.1:9/hook").unwrap();
        assert!(matches!(
            url.check(&AddressPolicy::default()).await,
            Err(InvalidUrl::Blocked(_))
        ));
        let open = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(url.check(&open).await.is_ok());
        let v6 = WebhookUrl::parse("http://[::ffff:10.0.0.1]/").unwrap();
        assert!(v6.check(&AddressPolicy::default()).await.is_err());
        let broker = WebhookUrl::parse("redis://10.1.2.3:6379/0?stream=s").unwrap();
        assert!(matches!(
            broker.check(&AddressPolicy::default()).await,
            Err(InvalidUrl::Blocked(_))
        ));
    }
}
