//! Request paths: normalization (so that `/a/../admin` and `/%61dmin` match and are denied
//! as `/admin`), segment-wise prefix matching, and prefix replacement.

use std::borrow::Cow;

/// Why a path cannot be normalized; the request is answered 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent-encoding")]
    BadEncoding,
    /// Not an absolute path (and not `*`).
    #[error("the path does not start with '/'")]
    NotAbsolute,
}

/// RFC 3986 normalization of an absolute path, as Envoy's `normalize_path`: percent-encoded
/// unreserved characters are decoded, other escapes get upper-case hex, and `.`/`..`
/// segments are removed. Returns the input unchanged (borrowed) in the common case.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let needs_work = path.contains('%') || path.split('/').any(|s| s == "." || s == "..");
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).and_then(hex),
            bytes.get(i + 2).and_then(hex),
        ) else {
            return Err(PathError::BadEncoding);
        };
        let byte = hi * 16 + lo;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
        }
        i += 3;
    }
    Ok(out)
}

pub(crate) fn hex(byte: &u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 section 5.2.4 for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path[1..].split('/').collect();
    let last = parts.len() - 1;
    for (i, segment) in parts.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if i == last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Whether `path` starts with `prefix` by whole segments. `prefix` is stored without a
/// trailing slash, so "" matches everything.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// Gateway API's `ReplacePrefixMatch`: `matched` (without trailing slash) is replaced by
/// `replacement` and the rest of the path kept, with exactly one slash between them.
pub fn replace_prefix(path: &str, matched: &str, replacement: &str) -> String {
    let rest = &path[matched.len().min(path.len())..];
    let head = replacement.trim_end_matches('/');
    let joined = format!("{head}{rest}");
    if joined.is_empty() {
        "/".to_string()
    } else {
        joined
    }
}
