//! gRPC's framing of a unary call over HTTP/2, pure: the 5-byte message prefix (compressed
//! flag, big-endian length) and the `grpc-status` / `grpc-message` of the trailers.
//!
//! Kept rather than tonic (issue 23): one unary call needs only this prefix and the trailers,
//! over h2, which the client already drives with its one deadline; tonic would add tower and
//! hyper's client stack (and a codegen step) to the static binary for the same bytes. The
//! `pod_resources` test runs the client against a gRPC server over HTTP/2 on a unix socket.
use super::proto::MAX_RESPONSE;

/// The body of a `List` request: one uncompressed message of length 0
/// (`ListPodResourcesRequest` has no fields).
pub const EMPTY_REQUEST: [u8; 5] = [0, 0, 0, 0, 0];

/// The largest response body read: one prefix and one message of at most [`MAX_RESPONSE`].
pub const MAX_BODY: usize = 5 + MAX_RESPONSE;

/// Longest `grpc-message` kept.
const MAX_MESSAGE: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the response body is {len} bytes, shorter than a message prefix")]
    Short { len: usize },
    #[error("the response message is compressed (flag {flag}); none was asked for")]
    Compressed { flag: u8 },
    #[error("the response message is {len} bytes, more than the {MAX_RESPONSE} read")]
    TooLarge { len: u64 },
    #[error("the response message says {len} bytes, the body has {have}")]
    Truncated { len: usize, have: usize },
    #[error("{extra} bytes follow the response message (a unary call has one)")]
    Trailing { extra: usize },
}

/// The one message of a unary response body.
pub fn unframe(body: &[u8]) -> Result<&[u8], FrameError> {
    let Some((prefix, rest)) = body.split_first_chunk::<5>() else {
        return Err(FrameError::Short { len: body.len() });
    };
    if prefix[0] != 0 {
        return Err(FrameError::Compressed { flag: prefix[0] });
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    if len as usize > MAX_RESPONSE {
        return Err(FrameError::TooLarge { len: len.into() });
    }
    let len = len as usize;
    if rest.len() < len {
        return Err(FrameError::Truncated {
            len,
            have: rest.len(),
        });
    }
    if rest.len() > len {
        return Err(FrameError::Trailing {
            extra: rest.len() - len,
        });
    }
    Ok(rest)
}

/// A call that ended with a non-OK status, or without one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Status {
    #[error("grpc-status {code}: {message}")]
    Failed { code: u32, message: String },
    #[error("the response has no grpc-status")]
    Missing,
    #[error("grpc-status {0:?} is not a number")]
    Unreadable(String),
}

/// `Ok` for `grpc-status: 0`; the code and its (percent-decoded, bounded) message otherwise.
pub fn check_status(status: Option<&[u8]>, message: Option<&[u8]>) -> Result<(), Status> {
    let Some(status) = status else {
        return Err(Status::Missing);
    };
    let text = String::from_utf8_lossy(status);
    let code = text
        .trim()
        .parse::<u32>()
        .map_err(|_| Status::Unreadable(text.chars().take(32).collect()))?;
    if code == 0 {
        return Ok(());
    }
    Err(Status::Failed {
        code,
        message: message.map(percent_decode).unwrap_or_default(),
    })
}

/// gRPC percent-encodes `grpc-message` (RFC 3986 style, UTF-8 underneath).
fn percent_decode(raw: &[u8]) -> String {
    let raw = &raw[..raw.len().min(3 * MAX_MESSAGE)];
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out)
        .chars()
        .take(MAX_MESSAGE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_uncompressed_message_is_unframed() {
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 0x0a, 0x00]), Ok(&[0x0a, 0x00][..]));
        assert_eq!(unframe(&EMPTY_REQUEST), Ok(&[][..]));
        assert_eq!(unframe(&[0, 0, 0]), Err(FrameError::Short { len: 3 }));
        assert_eq!(
            unframe(&[1, 0, 0, 0, 0]),
            Err(FrameError::Compressed { flag: 1 })
        );
        assert_eq!(
            unframe(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge {
                len: u32::MAX.into()
            })
        );
        assert_eq!(
            unframe(&[0, 0, 0, 0, 3, 1]),
            Err(FrameError::Truncated { len: 3, have: 1 })
        );
        assert_eq!(
            unframe(&[0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]),
            Err(FrameError::Trailing { extra: 5 })
        );
    }

    #[test]
    fn status_zero_is_ok_and_others_carry_their_message() {
        assert_eq!(check_status(Some(b"0"), None), Ok(()));
        assert_eq!(check_status(None, None), Err(Status::Missing));
        assert_eq!(
            check_status(
                Some(b"7"),
                Some(b"pod resources API is disabled: caf%C3%A9 100%")
            ),
            Err(Status::Failed {
                code: 7,
                message: "pod resources API is disabled: café 100%".into()
            })
        );
        assert!(matches!(
            check_status(Some(b"x"), None),
            Err(Status::Unreadable(_))
        ));
        let long = vec![b'a'; 10_000];
        match check_status(Some(b"2"), Some(&long)) {
            Err(Status::Failed { message, .. }) => assert_eq!(message.len(), MAX_MESSAGE),
            other => panic!("{other:?}"),
        }
    }
}
