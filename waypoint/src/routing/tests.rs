use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode};

use super::*;
use crate::config::{PathModifier, Redirect};

#[test]
fn paths_are_normalized_like_envoy() {
    let cases = [
        ("/a/b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../../b", "/b"),
        ("/a/b/..", "/a/"),
        ("/%61dmin", "/admin"),
        ("/a%2fb", "/a%2Fb"),
        ("/%7euser", "/~user"),
        ("/a/%2e%2e/b", "/b"),
    ];
    for (input, expected) in cases {
        assert_eq!(normalize_path(input).unwrap(), expected, "{input}");
    }
    assert_eq!(normalize_path("/bad%zz"), Err(PathError::BadEncoding));
    assert_eq!(normalize_path("/bad%4"), Err(PathError::BadEncoding));
    assert_eq!(normalize_path("relative"), Err(PathError::NotAbsolute));
}

#[test]
fn prefixes_match_whole_segments() {
    assert!(prefix_matches("/foo", "/foo"));
    assert!(prefix_matches("/foo", "/foo/bar"));
    assert!(!prefix_matches("/foo", "/foobar"));
    assert!(prefix_matches("", "/anything"));
}

#[test]
fn prefix_replacement_follows_the_gateway_api_table() {
    let cases = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/", "/foo", "/xyz/", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/bar", "/foo", "/", "/bar"),
        ("/foo", "/foo", "/", "/"),
    ];
    for (path, matched, replacement, expected) in cases {
        assert_eq!(
            replace_prefix(path, matched, replacement),
            expected,
            "{path} {matched} {replacement}"
        );
    }
}

#[test]
fn query_parameters_are_decoded_and_the_first_wins() {
    assert_eq!(
        query_param("a=1&b=two%20words&b=3", "b").as_deref(),
        Some("two words")
    );
    assert_eq!(query_param("q=a+b", "q").as_deref(), Some("a b"));
    assert_eq!(query_param("flag&x=1", "flag").as_deref(), Some(""));
    assert_eq!(query_param("x=1", "y"), None);
}

#[test]
fn hostnames_with_wildcards() {
    let hosts: Vec<Arc<str>> = vec!["*.example.com".into(), "exact.org".into()];
    assert!(hostname_accepted(&hosts, "a.example.com"));
    assert!(!hostname_accepted(&hosts, "example.com"));
    assert!(hostname_accepted(&hosts, "exact.org"));
    assert!(!hostname_accepted(&hosts, "other.org"));
    assert!(hostname_accepted(&[], "anything"));
}

#[test]
fn header_matches_join_repeated_values() {
    let matcher = crate::config::HeaderMatch {
        name: http::HeaderName::from_static("x-v"),
        value: crate::config::StringMatch::Exact("a,b".into()),
    };
    let mut headers = HeaderMap::new();
    headers.append("x-v", HeaderValue::from_static("a"));
    assert!(!matcher.matches(&headers));
    headers.append("x-v", HeaderValue::from_static("b"));
    assert!(matcher.matches(&headers));
}

#[test]
fn redirect_locations() {
    let redirect = Redirect {
        scheme: None,
        hostname: None,
        path: Some(PathModifier::Full("/moved".into())),
        port: Some(8443),
        status: StatusCode::FOUND,
    };
    let location = redirect_location(
        &redirect,
        "http",
        "shop.example:8080",
        8080,
        "/old",
        Some("a=1"),
        None,
    )
    .unwrap();
    assert_eq!(location, "http://shop.example:8443/moved?a=1");
    let keep = Redirect {
        scheme: Some("https"),
        hostname: None,
        path: None,
        port: None,
        status: StatusCode::MOVED_PERMANENTLY,
    };
    let location =
        redirect_location(&keep, "http", "shop.example:8080", 8080, "/old", None, None).unwrap();
    assert_eq!(location, "https://shop.example/old");
}

/// Gateway API: without a port, a redirect that keeps the scheme keeps the listener's port
/// (the service port the client dialed), one that changes it uses the new scheme's; a
/// well-known port is never written out.
#[test]
fn redirect_ports_follow_the_gateway_api() {
    let redirect = |scheme, hostname: Option<&str>, port| Redirect {
        scheme,
        hostname: hostname.map(str::to_string),
        path: Some(PathModifier::Full("/here".into())),
        port,
        status: StatusCode::FOUND,
    };
    let cases = [
        // (scheme, hostname, port), Host of the request, listener port, expected
        ((None, None, None), "web:8080", 8080, "http://web:8080/here"),
        ((None, None, None), "web", 8080, "http://web:8080/here"),
        ((None, None, None), "web", 80, "http://web/here"),
        (
            (None, Some("new.example"), None),
            "web:8080",
            8080,
            "http://new.example:8080/here",
        ),
        (
            (Some("https"), None, None),
            "web:8080",
            8080,
            "https://web/here",
        ),
        (
            (Some("http"), None, None),
            "web:8080",
            8080,
            "http://web/here",
        ),
        (
            (Some("https"), None, Some(443)),
            "web",
            80,
            "https://web/here",
        ),
        (
            (Some("http"), None, Some(80)),
            "web:8080",
            8080,
            "http://web/here",
        ),
        ((None, None, Some(80)), "web:8080", 8080, "http://web/here"),
        (
            (Some("https"), None, Some(80)),
            "web",
            80,
            "https://web:80/here",
        ),
    ];
    for ((scheme, hostname, port), authority, listener, expected) in cases {
        let location = redirect_location(
            &redirect(scheme, hostname, port),
            "http",
            authority,
            listener,
            "/old",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            location, expected,
            "{scheme:?} {hostname:?} {port:?} from {authority} on {listener}"
        );
    }
}

#[test]
fn weighted_choice_and_shares() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    assert!(in_share(100.0, &mut rng));
    assert!(!in_share(0.0, &mut rng));
    let hits = (0..10_000).filter(|_| in_share(25.0, &mut rng)).count();
    assert!((2300..=2700).contains(&hits), "{hits}");
}
