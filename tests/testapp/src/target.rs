//! Where the clients may connect: names resolved like the pod resolves them (`/etc/hosts`
//! first, through `tokio::net::lookup_host`), and only to loopback or private lab addresses.

use std::net::{IpAddr, SocketAddr};

use http::Uri;

/// Why a target was refused or could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target is not `HOST:PORT`.
    #[error("{target:?} is not HOST:PORT (for example backend:8080 or 10.0.1.5:9000)")]
    NotHostPort {
        /// The target as given.
        target: String,
    },
    /// The URL does not parse or lacks a host.
    #[error("{url:?} is not a URL like http://HOST:PORT/PATH: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL uses a scheme other than plain HTTP.
    #[error("{url:?}: only http:// is supported (the mesh adds TLS, the app does not)")]
    UnsupportedScheme {
        /// The URL as given.
        url: String,
    },
    /// The name did not resolve.
    #[error("cannot resolve {host:?}: {source} (is it in /etc/hosts of this pod?)")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The name resolved to nothing.
    #[error("{host:?} resolves to no address")]
    NoAddress {
        /// The host name.
        host: String,
    },
    /// The name resolved to an address outside loopback and the private lab ranges.
    #[error(
        "{host:?} resolves to {addr}, which is neither loopback nor a private lab address; \
         the test client only talks to the lab"
    )]
    OutsideLab {
        /// The host name.
        host: String,
        /// The offending address.
        addr: IpAddr,
    },
}

/// True for the addresses a test client may reach: loopback, RFC 1918, shared address space
/// (100.64/10), link-local, IPv6 unique-local and link-local. Everything the lab creates lives
/// there; the public internet does not.
pub fn is_lab_address(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Resolves `host` and checks that every address it maps to is a lab address; returns the first.
///
/// Every address must pass, not just one, so a name with a public address among private ones
/// is refused rather than half-trusted.
pub async fn resolve_lab(host: &str, port: u16) -> Result<SocketAddr, TargetError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|source| TargetError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if let Some(outside) = addrs.iter().find(|addr| !is_lab_address(addr.ip())) {
        return Err(TargetError::OutsideLab {
            host: host.to_owned(),
            addr: outside.ip(),
        });
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| TargetError::NoAddress {
            host: host.to_owned(),
        })
}

/// Splits `HOST:PORT` (with `[v6]:PORT` for IPv6 literals) into its parts.
pub fn split_host_port(target: &str) -> Result<(&str, u16), TargetError> {
    let invalid = || TargetError::NotHostPort {
        target: target.to_owned(),
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return Err(invalid());
    }
    Ok((host, port))
}

/// A resolved, checked `http://` URL.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// `host[:port]` exactly as in the URL: the `Host` header and the HTTP/2 `:authority`.
    pub authority: String,
    /// The path and query to request (`/` when the URL has none).
    pub path_and_query: String,
    /// The address to connect to.
    pub addr: SocketAddr,
}

impl HttpTarget {
    /// Parses `url`, resolves its host and checks the address (see [`resolve_lab`]).
    pub async fn resolve(url: &str) -> Result<Self, TargetError> {
        let invalid = |reason: &str| TargetError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => {
                return Err(TargetError::UnsupportedScheme {
                    url: url.to_owned(),
                });
            }
            None => return Err(invalid("it has no scheme")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("it has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = resolve_lab(authority.host(), port).await?;
        let path_and_query = uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        Ok(Self {
            authority: authority.as_str().to_owned(),
            path_and_query,
            addr,
        })
    }

    /// The absolute URI of the request, for HTTP/2 where it carries `:scheme` and `:authority`.
    pub fn absolute_uri(&self) -> String {
        format!("http://{}{}", self.authority, self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn lab_ranges_are_allowed_and_the_internet_is_not() {
        for allowed in [
            "127.0.0.1",
            "10.0.1.5",
            "10.96.0.10",
            "172.16.0.1",
            "192.168.1.1",
        ] {
            assert!(is_lab_address(ip(allowed)), "{allowed}");
        }
        for allowed in [
            "100.64.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_lab_address(ip(allowed)), "{allowed}");
        }
        for refused in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_lab_address(ip(refused)), "{refused}");
        }
        assert!(!is_lab_address(ip("::ffff:8.8.8.8")));
    }

    #[test]
    fn host_port_splits() {
        assert_eq!(split_host_port("backend:8080").unwrap(), ("backend", 8080));
        assert_eq!(split_host_port("[::1]:9").unwrap(), ("[::1]", 9));
        for bad in ["backend", ":80", "backend:http", "::1:80", "a:70000"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn urls_resolve_to_checked_targets() {
        let target = HttpTarget::resolve("http://127.0.0.1:8080/hello?x=1")
            .await
            .unwrap();
        assert_eq!(target.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(target.authority, "127.0.0.1:8080");
        assert_eq!(target.path_and_query, "/hello?x=1");
        assert_eq!(target.absolute_uri(), "http://127.0.0.1:8080/hello?x=1");

        let localhost = HttpTarget::resolve("http://localhost:81").await.unwrap();
        assert!(localhost.addr.ip().is_loopback());
        assert_eq!(localhost.path_and_query, "/");
    }

    #[tokio::test]
    async fn bad_urls_and_public_addresses_are_refused() {
        let outside = HttpTarget::resolve("http://8.8.8.8/").await.unwrap_err();
        assert!(
            matches!(outside, TargetError::OutsideLab { .. }),
            "{outside}"
        );
        let https = HttpTarget::resolve("https://127.0.0.1/").await.unwrap_err();
        assert!(
            matches!(https, TargetError::UnsupportedScheme { .. }),
            "{https}"
        );
        let relative = HttpTarget::resolve("/just/a/path").await.unwrap_err();
        assert!(
            matches!(relative, TargetError::InvalidUrl { .. }),
            "{relative}"
        );
    }
}
