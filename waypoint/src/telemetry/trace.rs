//! W3C trace context: the waypoint is one hop of the trace. It keeps the trace id and
//! flags of an incoming `traceparent` (or starts a trace when there is none or it is
//! invalid), and gives the upstream request a `traceparent` with a span id of its own.

use http::{HeaderMap, HeaderValue};
use rand::Rng;
use ztunnel::hbone::TRACEPARENT;

/// This hop's place in a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, from the client or new.
    pub trace_id: u128,
    /// The client's span, when it sent one.
    pub parent_id: Option<u64>,
    /// This hop's span.
    pub span_id: u64,
    /// The trace flags (bit 0: sampled), kept from the client; new traces are not sampled.
    pub flags: u8,
}

impl TraceContext {
    /// The context of a request with `headers`.
    pub fn from_headers(headers: &HeaderMap, rng: &mut impl Rng) -> Self {
        let span_id = nonzero_u64(rng);
        match headers.get(TRACEPARENT).and_then(|v| parse(v.as_bytes())) {
            Some((trace_id, parent_id, flags)) => Self {
                trace_id,
                parent_id: Some(parent_id),
                span_id,
                flags,
            },
            None => Self {
                trace_id: loop {
                    let id: u128 = rng.random();
                    if id != 0 {
                        break id;
                    }
                },
                parent_id: None,
                span_id,
                flags: 0,
            },
        }
    }

    /// The `traceparent` to send upstream: this trace, this hop's span.
    pub fn traceparent(&self) -> HeaderValue {
        // Written digit by digit: `format!` with width and radix costs more than the rest
        // of the header handling of a request.
        let mut value = [0u8; TRACEPARENT_LEN];
        value[..3].copy_from_slice(b"00-");
        hex(&self.trace_id.to_be_bytes(), &mut value[3..35]);
        value[35] = b'-';
        hex(&self.span_id.to_be_bytes(), &mut value[36..52]);
        value[52] = b'-';
        hex(&[self.flags], &mut value[53..]);
        HeaderValue::from_bytes(&value).expect("hex digits and dashes are a valid header value")
    }

    /// The trace id as 32 hex digits, for logs.
    pub fn trace_id_hex(&self) -> String {
        let mut text = [0u8; 32];
        hex(&self.trace_id.to_be_bytes(), &mut text);
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// The length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// Writes `bytes` as lower-case hex digits into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

fn nonzero_u64(rng: &mut impl Rng) -> u64 {
    loop {
        let id: u64 = rng.random();
        if id != 0 {
            return id;
        }
    }
}

/// `version-traceid-parentid-flags`; version 00 exactly, or a later version whose first four
/// fields have the same shape (W3C's forward-compatibility rule). All-zero ids are invalid.
fn parse(value: &[u8]) -> Option<(u128, u64, u8)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    if !is_lower_hex(trace) || !is_lower_hex(parent) || !is_lower_hex(flags) {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok()?;
    let parent = u64::from_str_radix(parent, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (trace != 0 && parent != 0).then_some((trace, parent, flags))
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_trace_and_flags_with_a_new_span() {
        let mut headers = HeaderMap::new();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(TRACEPARENT, HeaderValue::from_static(incoming));
        let cx = TraceContext::from_headers(&headers, &mut rand::rng());
        assert_eq!(cx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.parent_id, Some(0x00f0_67aa_0ba9_02b7));
        assert_eq!(cx.flags, 1);
        let out = cx.traceparent();
        let out = out.to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert_ne!(&out[36..52], "00f067aa0ba902b7", "a new span id per hop");
        let span = u64::from_str_radix(&out[36..52], 16).unwrap();
        assert_eq!(span, cx.span_id);
        assert_eq!(parse(out.as_bytes()), Some((cx.trace_id, span, 1)));
    }

    #[test]
    fn starts_a_trace_when_absent_or_invalid() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let mut headers = HeaderMap::new();
            if !bad.is_empty() {
                headers.insert(TRACEPARENT, HeaderValue::from_str(bad).unwrap());
            }
            let cx = TraceContext::from_headers(&headers, &mut rand::rng());
            assert_eq!(cx.parent_id, None, "{bad:?}");
            assert_ne!(cx.trace_id, 0);
            assert_eq!(cx.traceparent().len(), 55);
        }
    }
}
