//! `X-Request-Id`: kept when the client sent a sane one, generated otherwise.
//!
//! A generated id is 128 bits written as 32 lowercase hex digits, never all
//! zero: the shape of a W3C trace-context trace id, so tracing tools take it
//! as one. It is `prefix ‖ mix(n)`:
//! - `prefix`: 64 random bits drawn once per process (never zero);
//! - `n`: the process's request counter, 64 bits, from a random start (it
//!   takes 2^64 requests, 11 million years at 50k req/s, to come round);
//! - `mix`: the splitmix64 finalizer, a bijection on 64 bits, so distinct
//!   counts give distinct ids while the low half looks random. Tools assume
//!   trace ids are random: a sampler that keeps a trace when the id's low
//!   bits fall under a threshold (OpenTelemetry's `TraceIdRatioBased`) would
//!   keep every id of a plain counter until it ran past the threshold.
//!
//! Ids are unique within a process by construction, and across processes
//! unless two draw the same 64-bit prefix (for a fleet of 1000 processes,
//! about one chance in 4·10¹³).
//!
//! No lock and no shared cache line on the hot path: a thread claims a block
//! of [`BLOCK`] counts with one atomic add and then counts in a thread-local.
//! The id is written into a stack buffer (`format!` and its `String` would
//! cost more than the rest).

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header, as a `HeaderName`: looking a `&str` up parses it every time.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id we pass on; longer ones are replaced.
const MAX_LEN: usize = 128;

/// Counts a thread claims at once from the process's counter.
const BLOCK: u64 = 1024;

/// The client's `x-request-id` if it is 1 to 128 bytes of visible ASCII
/// (no spaces or control characters); else a new id.
pub fn from_request_or_new(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(new_id)
}

/// A new id from this process's source (see the module doc).
pub fn new_id() -> HeaderValue {
    static PROCESS: LazyLock<IdSource> =
        LazyLock::new(|| IdSource::new(random_u64(), random_u64()));
    thread_local! {
        static CLAIMED: Cell<Block> = const { Cell::new(Block::EMPTY) };
    }
    let n = CLAIMED.with(|c| {
        let mut block = c.get();
        let n = block.take(&PROCESS);
        c.set(block);
        n
    });
    PROCESS.id(n)
}

/// 64 bits from the OS's randomness (std seeds `RandomState` from it, and
/// each one differs), mixed with the pid and the time so that forked
/// processes differ too.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A process's ids: its prefix and the next unclaimed count.
struct IdSource {
    prefix: u64,
    next: AtomicU64,
}

impl IdSource {
    /// A source whose counter starts at `start` (random in production;
    /// tests start near a boundary). A zero prefix becomes 1, so that no id
    /// is all zero.
    fn new(prefix: u64, start: u64) -> Self {
        Self {
            prefix: prefix.max(1),
            next: AtomicU64::new(start),
        }
    }

    /// The first count of a block of [`BLOCK`] that no one else gets
    /// (the counter wraps at 2^64, never sooner).
    fn claim(&self) -> u64 {
        self.next.fetch_add(BLOCK, Ordering::Relaxed)
    }

    /// The id of count `n`.
    fn id(&self, n: u64) -> HeaderValue {
        let mut id = [0u8; 32];
        hex_into(&mut id[..16], self.prefix);
        hex_into(&mut id[16..], mix(n));
        HeaderValue::from_bytes(&id).expect("hex is a valid header value")
    }
}

/// The counts a thread has claimed and not used yet.
#[derive(Clone, Copy)]
struct Block {
    next: u64,
    end: u64,
}

impl Block {
    const EMPTY: Block = Block { next: 0, end: 0 };

    /// The next count, claiming a new block from `source` when this one is used up.
    fn take(&mut self, source: &IdSource) -> u64 {
        if self.next == self.end {
            self.next = source.claim();
            self.end = self.next.wrapping_add(BLOCK);
        }
        let n = self.next;
        self.next = n.wrapping_add(1);
        n
    }
}

/// splitmix64's finalizer: a bijection on `u64` (each step is invertible:
/// xor-shifts and multiplications by odd constants) that spreads every input
/// bit over the output.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Writes the low `out.len() * 4` bits of `v` as lowercase hex, big-endian.
fn hex_into(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_trace_id_shaped(id: &HeaderValue) -> bool {
        let b = id.as_bytes();
        b.len() == 32
            && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            && b.iter().any(|c| *c != b'0')
    }

    #[test]
    fn keeps_sane_ids_and_replaces_hostile_ones() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(from_request_or_new(&h), "abc-123");
        let w3c = "4bf92f3577b34da6a3ce929d0e0e4736";
        h.insert("x-request-id", HeaderValue::from_static(w3c));
        assert_eq!(from_request_or_new(&h), w3c);
        for hostile in [
            "x".repeat(MAX_LEN + 1),
            "has space".into(),
            "tab\there".into(),
            String::new(),
        ] {
            h.insert("x-request-id", HeaderValue::from_str(&hostile).unwrap());
            let id = from_request_or_new(&h);
            assert!(is_trace_id_shaped(&id), "{hostile:?} gave {id:?}");
        }
        h.insert(
            "x-request-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(is_trace_id_shaped(&from_request_or_new(&h)));
    }

    #[test]
    fn new_ids_are_shaped_like_w3c_trace_ids() {
        for _ in 0..1000 {
            let id = new_id();
            assert!(is_trace_id_shaped(&id), "{id:?}");
        }
        // Not all zero even for a zero prefix and count.
        let zero = IdSource::new(0, 0);
        assert!(is_trace_id_shaped(&zero.id(0)));
        // The prefix, then the mixed count.
        let src = IdSource::new(0x0123_4567_89ab_cdef, 0);
        assert_eq!(
            src.id(1).to_str().unwrap(),
            format!("0123456789abcdef{:016x}", mix(1))
        );
    }

    #[test]
    fn ids_stay_distinct_across_the_32_bit_boundary() {
        // The counts 0, 1, 2 and the counts just past 2^32 must not meet.
        let prefix = 0x5eed;
        let (early, late) = (
            IdSource::new(prefix, 0),
            IdSource::new(prefix, (1 << 32) - 2),
        );
        let (mut a, mut b) = (Block::EMPTY, Block::EMPTY);
        let mut ids = HashSet::new();
        for _ in 0..3 {
            assert!(ids.insert(early.id(a.take(&early))));
        }
        for _ in 0..6 {
            assert!(ids.insert(late.id(b.take(&late))), "repeat after 2^32");
        }
        assert_eq!(b.next, (1 << 32) + 4, "the count crossed 2^32");
    }

    #[test]
    fn a_random_start_near_the_end_of_the_counter_wraps_without_repeats() {
        let src = IdSource::new(1, u64::MAX - BLOCK - 3);
        let mut b = Block::EMPTY;
        let ids: HashSet<_> = (0..3 * BLOCK).map(|_| src.id(b.take(&src))).collect();
        assert_eq!(ids.len(), 3 * BLOCK as usize);
    }

    #[test]
    fn blocks_never_overlap() {
        let src = IdSource::new(1, 0);
        let (mut a, mut b) = (Block::EMPTY, Block::EMPTY);
        let mut seen = HashSet::new();
        for _ in 0..3 * BLOCK {
            assert!(seen.insert(a.take(&src)));
            assert!(seen.insert(b.take(&src)));
        }
    }

    #[test]
    fn ids_differ_across_threads() {
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..5000).map(|_| new_id()).collect::<Vec<_>>()))
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(all.insert(id), "an id repeated across threads");
            }
        }
        assert_eq!(all.len(), 8 * 5000);
    }

    #[test]
    fn mix_keeps_distinct_counts_distinct() {
        let outs: HashSet<u64> = (0..100_000u64)
            .chain((1u64 << 32) - 50_000..(1u64 << 32) + 50_000)
            .map(mix)
            .collect();
        assert_eq!(outs.len(), 200_000);
    }

    #[test]
    fn hex_is_zero_padded_lowercase() {
        let mut out = [0u8; 8];
        hex_into(&mut out, 0xab);
        assert_eq!(&out, b"000000ab");
        let mut out = [0u8; 16];
        hex_into(&mut out, u64::MAX - 1);
        assert_eq!(&out, b"fffffffffffffffe");
    }
}
