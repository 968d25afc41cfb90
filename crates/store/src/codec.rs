//! The project's one binary codec: bincode 2.0.1 in serde mode, bounded.
//!
//! Everything that crosses a process boundary or lands on disk as a serde value goes through
//! here: state machine operations ([`encode_op`]/[`decode_op`]), the store's own records, the
//! server's peer frames ([`encode`]/[`decode`]). Keeping one configuration in one place keeps
//! the formats in step.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;
use crate::op::Op;

/// The largest encoded value [`decode`] accepts: a claimed length beyond this is an error
/// before anything is allocated.
pub const MAX_DECODE_BYTES: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes `value`, or says why it cannot be (only types serde cannot describe fail).
pub fn try_encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| StoreError::Encode(e.to_string()))
}

/// Appends the encoding of `value` to `buf` (a buffer reused across values saves an
/// allocation each).
pub fn try_encode_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<(), StoreError> {
    bincode::serde::encode_into_std_write(value, buf, config())
        .map(drop)
        .map_err(|e| StoreError::Encode(e.to_string()))
}

/// Encodes `value`.
///
/// # Panics
/// Only for a type the codec cannot represent (e.g. a serde map of unknown length), which is a
/// programming error in the caller's type, never a property of the data.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    match try_encode(value) {
        Ok(v) => v,
        Err(e) => panic!("type cannot be encoded: {e}"),
    }
}

/// Decodes a whole buffer. Bytes left over, a truncated value, or a claimed length above
/// [`MAX_DECODE_BYTES`] are errors.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<T, StoreError> {
    let (value, used) = bincode::serde::decode_from_slice(buf, config())
        .map_err(|e| StoreError::Decode(e.to_string()))?;
    if used != buf.len() {
        return Err(StoreError::Decode(format!(
            "{} trailing bytes after the value",
            buf.len() - used
        )));
    }
    Ok(value)
}

/// Encodes a state machine operation for `Command.data`.
pub fn encode_op(op: &Op) -> Bytes {
    Bytes::from(encode(op))
}

/// Decodes `Command.data` into an operation.
pub fn decode_op(data: &[u8]) -> Result<Op, StoreError> {
    decode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let ops = [
            Op::Set {
                path: "/a/b".into(),
                rev: -1,
                value: Bytes::from_static(b"x=y\0z"),
            },
            Op::Del {
                path: "/a".into(),
                rev: 17,
            },
            Op::Nop,
        ];
        for op in ops {
            assert_eq!(decode_op(&encode_op(&op)).unwrap(), op);
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let good = encode_op(&Op::Set {
            path: "/a".into(),
            rev: 0,
            value: Bytes::new(),
        });
        for cut in 0..good.len() {
            assert!(decode_op(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = good.to_vec();
        long.push(0);
        assert!(matches!(decode_op(&long), Err(StoreError::Decode(_))));
        assert!(decode_op(&[9]).is_err(), "unknown variant");
        // A claimed length of 2^40 bytes is refused without allocating it.
        let huge = [0u8, 0xfc, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(decode_op(&huge).is_err());
    }
}
