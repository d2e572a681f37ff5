//! The query string as the hot-key cache keys it: two query strings that
//! normalize to the same parameters are the same resource, any other
//! difference is another resource.
//!
//! The normalization, in order:
//! 1. The query is cut at `&` into parameters; empty pieces are dropped
//!    (`?&a=1&&b=2&` is `?a=1&b=2`, and `?` is no query). `;` is not a
//!    separator.
//! 2. Each parameter is cut at its first `=` into a name and a value. A
//!    parameter without `=` (`?flag`) differs from one with an empty value
//!    (`?flag=`): some applications tell them apart.
//! 3. Percent-encoding is normalized as RFC 3986 §6.2.2 allows: `%XX` of an
//!    unreserved character (letters, digits, `-._~`) is decoded, every other
//!    `%XX` gets uppercase hex (`%2f` is `%2F`, never `/`). `+` stays `+`
//!    (it means a space only to form decoders), invalid escapes stay as they
//!    are, and names and values are case-sensitive.
//! 4. Parameters are sorted by normalized name, stably: parameters with one
//!    name keep their order (`?a=1&a=2` and `?a=2&a=1` are two resources,
//!    since many applications read the first or the list).
//!
//! Sorting merges `?a=1&b=2` with `?b=2&a=1`, which RFC 3986 calls two URIs:
//! an upstream that gives parameter order a meaning must not be cached by key
//! alone. Nothing is allocated for up to [`INLINE_PARAMS`] parameters.

use std::cmp::Ordering;
use std::hash::Hasher;

use smallvec::SmallVec;

/// Parameters sorted on the stack; a longer query spills to the heap.
const INLINE_PARAMS: usize = 32;

/// A parameter's raw name and value (`None`: no `=`).
type Param<'a> = (&'a [u8], Option<&'a [u8]>);

/// Feeds the normalized query to `h`: equal after normalization, equal input.
pub(super) fn hash_query(h: &mut impl Hasher, query: Option<&str>) {
    let mut params: SmallVec<[Param<'_>; INLINE_PARAMS]> = query
        .unwrap_or("")
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.split_once('=') {
            Some((name, value)) => (name.as_bytes(), Some(value.as_bytes())),
            None => (piece.as_bytes(), None),
        })
        .collect();
    // `sort_by` is stable: one name's parameters keep their order.
    params.sort_by(|a, b| compare(a.0, b.0));
    for (name, value) in &params {
        write_field(h, Normalized::new(name));
        match value {
            None => h.write_u8(0),
            Some(value) => {
                h.write_u8(1);
                write_field(h, Normalized::new(value));
            }
        }
    }
    h.write_usize(params.len());
}

fn compare(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    Normalized::new(a).cmp(Normalized::new(b))
}

/// Writes a byte stream to `h` in fixed blocks, then its length, so the
/// hash depends on the bytes alone and not on how they were cut (a
/// `Hasher` gives `write(b"ab")` and `write(b"a"); write(b"b")` different
/// results). The length after the bytes keeps consecutive fields apart.
pub(super) fn write_field(h: &mut impl Hasher, bytes: impl Iterator<Item = u8>) {
    let mut block = [0u8; 32];
    let (mut filled, mut total) = (0, 0usize);
    for b in bytes {
        block[filled] = b;
        filled += 1;
        if filled == block.len() {
            h.write(&block);
            total += filled;
            filled = 0;
        }
    }
    h.write(&block[..filled]);
    h.write_usize(total + filled);
}

/// The bytes of a query name or value with normalized percent-encoding.
#[derive(Clone)]
struct Normalized<'a> {
    rest: &'a [u8],
    /// The two hex digits of an escape kept encoded, still to yield.
    pending: [u8; 2],
    pending_len: u8,
}

impl<'a> Normalized<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Self {
            rest: raw,
            pending: [0; 2],
            pending_len: 0,
        }
    }
}

impl Iterator for Normalized<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.pending_len > 0 {
            let b = self.pending[2 - usize::from(self.pending_len)];
            self.pending_len -= 1;
            return Some(b);
        }
        let (&first, rest) = self.rest.split_first()?;
        if first == b'%' {
            if let [hi, lo, after @ ..] = rest {
                if let (Some(h), Some(l)) = (hex(*hi), hex(*lo)) {
                    self.rest = after;
                    let decoded = h << 4 | l;
                    if unreserved(decoded) {
                        return Some(decoded);
                    }
                    self.pending = [hi.to_ascii_uppercase(), lo.to_ascii_uppercase()];
                    self.pending_len = 2;
                    return Some(b'%');
                }
            }
        }
        self.rest = rest;
        Some(first)
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// RFC 3986 §2.3.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hasher};

    use super::*;

    fn normalized(raw: &str) -> String {
        String::from_utf8(Normalized::new(raw.as_bytes()).collect()).unwrap()
    }

    fn hashed(query: Option<&str>) -> u64 {
        let mut h = foldhash::quality::FixedState::with_seed(7).build_hasher();
        hash_query(&mut h, query);
        h.finish()
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_get_uppercase_hex() {
        assert_eq!(normalized("%61%2D%7e%30"), "a-~0");
        assert_eq!(normalized("%2f%2F%3d%20"), "%2F%2F%3D%20");
        assert_eq!(normalized("%zz%4%"), "%zz%4%", "invalid escapes stay");
        assert_eq!(normalized("a+b%C3%A9"), "a+b%C3%A9");
    }

    #[test]
    fn equal_queries_after_normalization_hash_equal() {
        let same = [Some("a=1&b=2"), Some("b=2&a=1"), Some("&&b=%32&a=%31&")];
        for q in same {
            assert_eq!(hashed(q), hashed(Some("a=1&b=2")), "{q:?}");
        }
        assert_eq!(hashed(None), hashed(Some("")));
        assert_eq!(hashed(None), hashed(Some("&&")));
    }

    #[test]
    fn other_queries_hash_apart() {
        let all = [
            None,
            Some("a"),
            Some("a="),
            Some("a=1"),
            Some("a=1&a=2"),
            Some("a=2&a=1"),
            Some("a=1&b=2"),
            Some("a=1b=2"),
            Some("a=1%26b=2"),
            Some("ab=12"),
            Some("A=1"),
            Some("q=%2F"),
            Some("q=/"),
            // Two fields whose bytes, run together, are equal.
            Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=b"),
            Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=ab"),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(hashed(*a), hashed(*b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn the_hash_does_not_depend_on_how_the_bytes_were_escaped() {
        // 40 bytes, past one block, with escapes on either side of the cut.
        let plain = "x=abcdefghijklmnopqrstuvwxyz0123456789ABCD";
        let escaped = "x=abcdefghijklmnopqrstuvwxyz012345%36%37%38%39ABCD";
        assert_eq!(hashed(Some(plain)), hashed(Some(escaped)));
    }

    #[test]
    fn a_long_query_is_sorted_too() {
        let forward: Vec<String> = (0..100).map(|i| format!("k{i:03}={i}")).collect();
        let backward: Vec<String> = forward.iter().rev().cloned().collect();
        assert_eq!(
            hashed(Some(&forward.join("&"))),
            hashed(Some(&backward.join("&")))
        );
    }
}
