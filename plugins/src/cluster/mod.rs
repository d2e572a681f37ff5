//! Cluster mode's local half: what a policy with `scope: global` keeps on
//! each instance, and the batches the gateway trades with Redis.
//!
//! Nothing here talks to Redis. A global policy counts locally and exposes
//! [`GlobalSync`]; every `sync_interval` the gateway collects each policy's
//! deltas into a [`Section`], sends all sections in one script call per key
//! shard, and hands back the fleet totals ([`SectionReply`]). Admission reads
//! only atomics: **no request ever waits on Redis**.
//!
//! # The fleet-wide limit and its error bound
//!
//! Instance *i* admits a request for key *k* when both hold:
//!
//! - `fleet + local + 1 ≤ limit`: `fleet` is the fleet-wide count of
//!   admitted requests in the window as of *i*'s last sync (a sliding
//!   estimate over B = 10 sub-buckets in Redis) and `local` what *i*
//!   admitted since (sent or not yet sent);
//! - `local + 1 ≤ ⌈(limit − fleet) · s_i⌉`: *i* spends only its share `s_i`
//!   of the headroom it saw. `s_i` is *i*'s part of the key's admissions in
//!   the last window (its own window over the fleet total), at least `1/N`
//!   (N = peers seen, or `expected_instances`), and `1/N` for a key not
//!   synced yet. Shares follow the traffic: a key that reaches only one
//!   instance gets the whole headroom from its second sync on.
//!
//! Without the share, N instances that read the same headroom would each
//! spend all of it before seeing the others' counts (measured: 120 in a 1 s
//! window against a limit of 100 with N = 3). With it, over any window of
//! length W the fleet admits at most
//!
//! ```text
//! limit · (1 + 1/B + (S − 1) · (2·I + d) / W)
//! ```
//!
//! - `1/B`: the sliding estimate assumes the oldest sub-bucket's requests
//!   were spread evenly; it is off by at most one sub-bucket's count.
//! - `S = Σ s_i`, the headroom spent per round: 1 when shares match the
//!   traffic, at most `2 − 1/N` (every instance at its `1/N` floor but one).
//!   Only `S − 1` of the headroom can be spent twice.
//! - `(2·I + d) / W`: the headroom that reopens while a count is on its way
//!   to the other instances (up to `I` until flushed, up to `I` until read,
//!   `d` the round trip).
//!
//! For N = 3, I = 100 ms, W = 1 s and d ≤ 50 ms that is 110 with even
//! shares and 127 at worst for a limit of 100; measured worst windows are
//! 112–114 (`tests/tests/it/cluster.rs`, `load/README.md`). The onset of a
//! burst does not add to it: a key seen for the first time starts every
//! instance at `1/N` of the limit.
//!
//! A failed sync drops the deltas it carried: the fleet then under-counts by
//! at most one interval of one instance's admissions, which the next window
//! forgets. While Redis is unreachable ([`Fleet::is_global`] false) every
//! instance enforces `limit ÷ expected_instances` on its own counts.

mod counter;
mod fleet;
mod scope;
mod sync;

pub use counter::{GlobalAdmit, GlobalCounter, FLEET_BUCKETS};
pub use fleet::{BlockChange, Fleet, FleetSettings};
pub use scope::Scope;
pub use sync::{GlobalSync, Section, SectionKind, SectionReply, SyncItem};
