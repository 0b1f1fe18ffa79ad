use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::*;
use crate::grpc;
use crate::sampling::Sampler;
use crate::server::AppIdentity;

fn peer() -> SocketAddr {
    "10.0.1.7:41000".parse().unwrap()
}

fn responder(fail_rate: f64, delay_ms: u64) -> Responder {
    let identity = AppIdentity {
        pod: Arc::from("cart-7f9c"),
        namespace: Arc::from("shop"),
        version: Arc::from("v2"),
    };
    let faults = Faults {
        fail_rate,
        delay: Duration::from_millis(delay_ms),
    };
    Responder::new(identity, faults, Sampler::with_seed(7))
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("host", "cart:8080")
        .body(Full::default())
        .unwrap()
}

async fn read(response: Response<ReplyBody>) -> (StatusCode, HeaderMap, Bytes, Option<HeaderMap>) {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (parts.status, parts.headers, collected.to_bytes(), trailers)
}

async fn reply_of(response: Response<ReplyBody>) -> (StatusCode, Reply) {
    let (status, _, body, _) = read(response).await;
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn reply_describes_the_app_and_the_request() {
    let request = Request::post("/orders?id=3")
        .header("host", "cart:8080")
        .header("x-user", "tester")
        .header("accept", "a")
        .header("accept", "b")
        .body(Full::from("hello"))
        .unwrap();
    let response = responder(0.0, 0).respond(request, peer()).await;
    assert_eq!(response.headers()[POD_HEADER], "cart-7f9c");
    assert_eq!(response.headers()[VERSION_HEADER], "v2");
    let (status, reply) = reply_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (reply.pod.as_str(), reply.namespace.as_str()),
        ("cart-7f9c", "shop")
    );
    assert_eq!(reply.version, "v2");
    assert_eq!(
        (reply.method.as_str(), reply.path.as_str()),
        ("POST", "/orders")
    );
    assert_eq!(reply.query.as_deref(), Some("id=3"));
    assert_eq!(reply.headers["x-user"], "tester");
    assert_eq!(reply.headers["accept"], "a, b");
    assert_eq!(reply.peer, "10.0.1.7:41000");
    assert_eq!(reply.host, "cart:8080");
    assert_eq!(reply.body_bytes, 5);
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn fail_rate_extremes() {
    let failing = responder(1.0, 0);
    let healthy = responder(0.0, 0);
    for _ in 0..20 {
        let (status, reply) = reply_of(failing.respond(get("/"), peer()).await).await;
        assert_eq!(
            (status, reply.status),
            (StatusCode::SERVICE_UNAVAILABLE, 503)
        );
        let (status, _) = reply_of(healthy.respond(get("/"), peer()).await).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn query_status_wins_over_the_fail_rate() {
    let response = responder(1.0, 0).respond(get("/?status=418"), peer()).await;
    let (status, reply) = reply_of(response).await;
    assert_eq!((status, reply.status), (StatusCode::IM_A_TEAPOT, 418));
}

#[tokio::test(start_paused = true)]
async fn delays_are_honoured_and_overridable() {
    let slow = responder(0.0, 300);
    let start = tokio::time::Instant::now();
    slow.respond(get("/"), peer()).await;
    assert_eq!(start.elapsed(), Duration::from_millis(300));

    let start = tokio::time::Instant::now();
    slow.respond(get("/?delay_ms=20"), peer()).await;
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn health_is_always_ok_and_immediate() {
    let start = tokio::time::Instant::now();
    let response = responder(1.0, 5_000)
        .respond(get("/healthz?status=500"), peer())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[POD_HEADER], "cart-7f9c");
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason() {
    let (status, _, body, _) =
        read(responder(0.0, 0).respond(get("/?status=999"), peer()).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("status=\"999\""),
        "{error}"
    );

    let huge = Request::post("/")
        .body(Full::from(vec![0u8; MAX_REQUEST_BODY + 1]))
        .unwrap();
    let response = responder(0.0, 0).respond(huge, peer()).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

fn grpc_call() -> Request<Full<Bytes>> {
    grpc_call_to("/testapp.TestApp/Echo")
}

fn grpc_call_to(uri: &str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc::encode_message(b"{}")))
        .unwrap()
}

#[tokio::test]
async fn grpc_calls_get_a_framed_reply_and_status_trailers() {
    let response = responder(0.0, 0).respond(grpc_call(), peer()).await;
    let (status, headers, body, trailers) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], grpc::CONTENT_TYPE);
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    let message = grpc::decode_first_message(&body).unwrap().unwrap();
    let reply: Reply = serde_json::from_slice(message).unwrap();
    assert_eq!(
        (reply.pod.as_str(), reply.path.as_str()),
        ("cart-7f9c", "/testapp.TestApp/Echo")
    );
    assert_eq!(reply.body_bytes, 7);

    let (status, _, body, trailers) =
        read(responder(1.0, 0).respond(grpc_call(), peer()).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    let trailers = trailers.unwrap();
    assert_eq!(trailers["grpc-status"], "14");
    assert!(trailers["grpc-message"].to_str().unwrap().contains("503"));
}

#[tokio::test]
async fn a_grpc_call_can_ask_for_its_status() {
    let call = grpc_call_to("/testapp.TestApp/Echo?grpc_status=5");
    let (status, _, body, trailers) = read(responder(0.0, 0).respond(call, peer()).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(trailers.unwrap()["grpc-status"], "5");

    let refused = grpc_call_to("/testapp.TestApp/Echo?grpc_status=99");
    let response = responder(0.0, 0).respond(refused, peer()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
