//! The one bounded reader. Whatever listwarden and its expander read
//! whole (config, rules and key files, state and progress files, a
//! message from Postfix) goes through [`read_at_most`], so no input makes
//! either hold more than the bound its caller sets.

use std::io::Read;

/// Why a bounded read gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("larger than {max} bytes")]
    TooLarge { max: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads `reader` to its end when it holds at most `max` bytes. One byte
/// past the bound is read, to tell "exactly `max`" from "too large"; a
/// FIFO or a /proc file reports no size, so the bound is applied while
/// reading.
pub fn read_at_most(reader: impl Read, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    reader
        .take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(ReadError::TooLarge { max });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_bound_and_refuses_one_byte_more() {
        assert_eq!(
            read_at_most(&b"abcd"[..], 4).expect("at the bound"),
            b"abcd"
        );
        assert!(matches!(
            read_at_most(&b"abcde"[..], 4),
            Err(ReadError::TooLarge { max: 4 })
        ));
        assert_eq!(read_at_most(&b""[..], 0).expect("empty"), b"");
    }
}
