//! Key text is capped in bytes, not only in count: a names table full of
//! 1 MiB keys, and a block list full of them, hold no more than their
//! per-entry bounds. Heap bytes are counted by a wrapping global allocator,
//! so this file is its own test binary with a single test (no other test
//! allocates while it counts).

use std::sync::Arc;
use std::time::Duration;

use breakwater_plugins::block_list::{BlockList, ENTRY_BYTES};
use breakwater_plugins::store::{KeyNames, NAME_BYTES};
use breakwater_plugins::FakeClock;

#[path = "../benches/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Distinct `len`-byte texts that share their first 200 bytes.
fn long(i: usize, len: usize) -> String {
    let mut s = "a".repeat(200);
    s.push_str(&i.to_string());
    let rest = len - s.len();
    s + &"x".repeat(rest)
}

#[test]
fn tables_of_long_keys_stay_within_their_byte_bounds() {
    const MIB: usize = 1 << 20;

    // The 4096 names of a rate-limit or abuse policy; a few keys of 1 MiB,
    // the rest of 4 KiB (the bound is per name, whatever the length).
    let before = live();
    let names = KeyNames::new(4096);
    for i in 0..4096 {
        let len = if i % 512 == 0 { MIB } else { 4 << 10 };
        names.note(i as u64, 0, || Some(long(i, len)), |_| true);
    }
    let held = (live() - before) as usize;
    eprintln!("names: {} bytes each", held / 4096);
    assert!(
        held <= 4096 * NAME_BYTES,
        "4096 names hold {held} bytes, over {} ({NAME_BYTES} each)",
        4096 * NAME_BYTES
    );
    assert!(names.name(0).len() <= 128 && names.name(4095).len() <= 128);
    drop(names);

    // A block list of 2000 long keys with long reasons and sources (the
    // admin's body holds 64 KiB; an abuse policy's key, 1 MiB).
    let before = live();
    let list = BlockList::new(2000, Arc::new(FakeClock::new()));
    for i in 0..2000 {
        let len = if i % 500 == 0 { MIB } else { 4 << 10 };
        list.block_text(
            &format!("user:{}", long(i, len)),
            Duration::from_secs(60),
            long(i, 4 << 10),
            &long(i, 1000),
            403,
        )
        .unwrap();
    }
    let held = (live() - before) as usize;
    eprintln!("blocks: {} bytes each", held / 2000);
    assert_eq!(list.counts().live, 2000);
    assert!(
        held <= 2000 * ENTRY_BYTES,
        "2000 blocks hold {held} bytes, over {} ({ENTRY_BYTES} each)",
        2000 * ENTRY_BYTES
    );
}
