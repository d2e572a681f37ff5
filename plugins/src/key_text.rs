//! Key text kept for people to read, cut to a bounded number of bytes.
//!
//! Policies tell keys apart by a 64-bit hash of the full value
//! ([`KeyHasher`](crate::store::KeyHasher)); the text of a key is kept only
//! to show an operator which key it is: the top keys of a limit, hot keys,
//! the block list. A client chooses that text, and a header value may be up
//! to 1 MiB, so every table that keeps key text cuts it to [`KEY_TEXT_MAX`]
//! bytes with [`cut_key`]. Cutting never changes identity: the hash is always
//! taken over the full value, so two long values that share their first
//! bytes stay two keys (shown alike, told apart by their hash).

/// The most bytes of key text kept, the marker included.
pub const KEY_TEXT_MAX: usize = 128;
/// The most bytes kept of other client- or operator-written text stored
/// beside a key (a block's reason).
pub const NOTE_TEXT_MAX: usize = 256;
/// Ends a text that was cut (3 bytes in UTF-8).
pub const CUT_MARKER: char = '…';

/// `text` cut to at most [`KEY_TEXT_MAX`] bytes (see [`cut_to`]).
pub fn cut_key(text: String) -> String {
    cut_to(text, KEY_TEXT_MAX)
}

/// `text` if it fits in `max` bytes; otherwise its longest prefix that ends
/// on a character boundary and leaves room for [`CUT_MARKER`], followed by
/// the marker. The result is a fresh allocation of its own length: a cut
/// `String` would keep the capacity of the megabyte it came from.
pub fn cut_to(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(CUT_MARKER.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + CUT_MARKER.len_utf8());
    out.push_str(&text[..end]);
    out.push(CUT_MARKER);
    out
}

/// Whether `text` was cut by [`cut_to`].
pub fn is_cut(text: &str) -> bool {
    text.ends_with(CUT_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        let t = "user:alice".to_string();
        assert_eq!(cut_key(t.clone()), t);
        let exact = "x".repeat(KEY_TEXT_MAX);
        assert_eq!(cut_key(exact.clone()), exact);
    }

    #[test]
    fn long_text_is_cut_to_the_cap_with_a_marker_and_no_spare_capacity() {
        let cut = cut_key("a".repeat(1 << 20));
        assert_eq!(cut.len(), KEY_TEXT_MAX);
        assert!(cut.capacity() <= KEY_TEXT_MAX);
        assert!(is_cut(&cut));
        assert_eq!(&cut[..KEY_TEXT_MAX - 3], "a".repeat(KEY_TEXT_MAX - 3));
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // 'é' is 2 bytes: byte 125, where the marker would start, is
        // mid-character, so the cut is one byte shorter.
        let cut = cut_key("é".repeat(200));
        assert_eq!(cut.len(), KEY_TEXT_MAX - 1);
        assert!(cut.starts_with("éé") && is_cut(&cut));
        let wide = cut_to("🦀".repeat(100), 10);
        assert_eq!(wide, "🦀…");
    }
}
