//! gRPC status in the request metrics, through the inbound side and the layer stack to a
//! real HTTP/2 endpoint: from the response's trailers, from a trailers-only response's
//! headers, mapped from the HTTP status when there is none, and empty for plain HTTP.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body;
use crate::testing::*;

const FRONT_VIP: [u8; 4] = [10, 96, 0, 1];

/// An HTTP/2 endpoint that answers by path: `/pkg.Svc/Find` a message with trailers
/// `grpc-status: 5`, `/pkg.Svc/Refuse` trailers-only `grpc-status: 7`, `/pkg.Svc/Broken`
/// a 503 without any `grpc-status`, anything else a plain 200.
async fn grpc_endpoint(ip: std::net::IpAddr) -> std::net::SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let grpc = |status: StatusCode| {
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/grpc")
                };
                let response = match request.uri().path() {
                    "/pkg.Svc/Find" => {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", "5".parse().unwrap());
                        trailers.insert("grpc-message", "no such thing".parse().unwrap());
                        // A length-prefixed message, then the status in the trailers.
                        let message = Full::new(Bytes::from_static(b"\0\0\0\0\x02hi"))
                            .with_trailers(async { Some(Ok(trailers)) });
                        grpc(StatusCode::OK).body(body::boxed(message))
                    }
                    "/pkg.Svc/Refuse" => grpc(StatusCode::OK)
                        .header("grpc-status", "7")
                        .body(body::empty()),
                    "/pkg.Svc/Broken" => grpc(StatusCode::SERVICE_UNAVAILABLE).body(body::empty()),
                    _ => Response::builder().body(body::full("plain")),
                };
                Ok::<_, std::convert::Infallible>(response.unwrap())
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

fn call(path: &str, grpc: bool) -> Request<body::Body> {
    let mut request = Request::post(format!("http://front.shop.svc.cluster.local{path}"));
    if grpc {
        request = request
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    }
    request.body(body::full("\0\0\0\0\0")).unwrap()
}

#[tokio::test]
async fn grpc_response_status_comes_from_trailers_or_headers_and_is_empty_for_http() {
    let mut world = World::new();
    world.service("front", FRONT_VIP, &[80], true);
    let endpoint = grpc_endpoint(world.next_ip()).await;
    world.workload("front-0", "front", 80, endpoint, true);
    let proxy = world.proxy();
    let (_drain_tx, drain) = watch::channel(false);
    let (inbound, _) = proxy.inbound(drain);
    let io = open_tunnel(&inbound, FRONT_VIP, 80).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(connection);

    let response = sender
        .send_request(call("/pkg.Svc/Find", true))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("grpc-status"));
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers relayed");
    assert_eq!(trailers["grpc-status"], "5");
    for (path, grpc) in [
        ("/pkg.Svc/Refuse", true),
        ("/pkg.Svc/Broken", true),
        ("/plain", false),
    ] {
        let response = sender.send_request(call(path, grpc)).await.unwrap();
        let _ = response.into_body().collect().await.unwrap();
    }

    let grpc = "request_protocol=\"grpc\"";
    for (labels, what) in [
        (
            [grpc, "grpc_response_status=\"5\"", "response_code=\"200\""],
            "the trailer",
        ),
        (
            [grpc, "grpc_response_status=\"7\"", "response_code=\"200\""],
            "a trailers-only response's header",
        ),
        (
            [grpc, "grpc_response_status=\"14\"", "response_code=\"503\""],
            "a 503 without grpc-status, as the client sees it",
        ),
        (
            [
                "request_protocol=\"http\"",
                "grpc_response_status=\"\"",
                "response_code=\"200\"",
            ],
            "plain HTTP: empty",
        ),
    ] {
        assert_eq!(
            wait_for_metric(&proxy, "istio_requests_total", &labels, 1.0).await,
            1.0,
            "{what}: {labels:?}\n{}",
            proxy.metrics_text()
        );
    }
    let text = proxy.metrics_text();
    assert_eq!(metric_sum(&text, "istio_requests_total", &[]), 4.0);
}
