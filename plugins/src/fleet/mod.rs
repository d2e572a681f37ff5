//! Fleet mode's local half: what a policy with `scope: global` keeps on
//! each instance, and the batches the gateway trades with Redis.
//!
//! Nothing here talks to Redis. A global policy counts locally and exposes
//! [`GlobalSync`]; every `sync_interval` the gateway collects each policy's
//! deltas into a [`Section`], sends all sections in one script call per key
//! shard, and hands back the fleet totals ([`SectionReply`]). Admission reads
//! only atomics: **no request ever waits on Redis**.
//!
//! # The fleet-wide limit: leases
//!
//! "Admit while the last known fleet total plus what this instance admitted
//! since stays under the limit" lets every instance spend the same headroom
//! before it sees the others' counts (measured: 1.9× the limit under full
//! load). Leases are that rule with the headroom split atomically: a lease
//! is a part of `limit − fleet total` as the store saw it, and the local
//! delta since is what has been spent of it.
//!
//! The store hands out the right to admit. Every sync, for each key it saw
//! within the window, an instance
//!
//! - hands back the unspent part of its last lease (to the bucket it was
//!   granted in),
//! - reports what it admitted without a lease, which the store adds as is,
//! - asks for a new lease: the larger of its demand (the last interval's
//!   requests and half again, at most `2·limit/N`, so one instance cannot
//!   take all the headroom that frees up while others want it too) and its
//!   part of the room, `(limit − total)/(2N)`, so a key far from its limit
//!   always holds lease, however its requests bunch up.
//!
//! A lease may be spent for `W − I` after its grant (the store counts a
//! grant for at least W); a key whose lease covers twice its demand and is
//! not about to expire (renewal starts `2I` before) sits the sync out, so a
//! key far from its limit costs the store about one lease per `W − 3I`, not
//! one call per interval.
//!
//! The script grants `min(want, limit − total)`, where `total` counts the
//! last B + 1 = 11 buckets in full (never less than what the window holds),
//! and adds the grant to the current bucket — inside one atomic call, so
//! two instances are never granted the same headroom, whatever their
//! phases. A request is admitted while the instance holds lease for its
//! key: one atomic decrement, never a Redis call.
//!
//! A key new to an instance (no lease within a window) may admit
//! `⌈limit / 2N⌉` before its first lease arrives, so a user's first burst
//! is not refused while the lease is on its way; those admissions are
//! reported at the next sync. A key that goes a window without a request
//! here hands its lease back and is new again when it returns. Because another instance may be granted a
//! lease before they are reported, the store leases a *young* key (counts
//! in its last two buckets only) at most `1/N` of the room per ask: the
//! grants then approach the limit geometrically while the reports come in.
//!
//! # Error bound
//!
//! With N instances, interval I, window W and round trip d, over any
//! window the fleet admits at most
//!
//! ```text
//! limit · (1 + (I + d) / W)  +  ⌈limit / 2N⌉ per instance that meets the
//!                               key anew (first, or after a window
//!                               without it) while the fleet already
//!                               holds it at its limit
//! ```
//!
//! - A lease is counted from the moment it is granted, for between W and
//!   W + W/B, but may be spent until the next sync, up to `I + d` later: an
//!   admission at the end of that span can share a window with requests
//!   admitted under the next leases. When leases are spent as they arrive
//!   (a busy key) this term is close to 0.
//! - Lease handed back and spent during the round trip is reported one
//!   sync later: meanwhile the store may grant it again (at most `r·d`, `r`
//!   the instance's rate).
//! - Allowances: when every instance meets a key at once (a burst) they add
//!   up to half the limit and the young-key rule leaves room for them;
//!   only an instance meeting a key the fleet already holds at its limit
//!   adds its allowance on top.
//!
//! For N = 3, I = 100 ms, W = 1 s, d ≈ 1 ms and a limit of 100 that is 111
//! for a known key. Measured worst 1 s windows: 100–102 for paced load
//! (`tests/tests/it/cluster.rs`); under full load see `load/results/cluster.md`.
//! Counting whole buckets costs up to a bucket of admissions when traffic is
//! steady (about 1% measured). The price of leases: a key's lease counts
//! against its limit until handed back, one sync later.
//!
//! A failed sync keeps the lease it tried to hand back and its report for
//! the next one (if the script ran but its answer was lost, the store has
//! counted the report and a grant this instance never received; both weigh
//! against the lease kept here). While Redis is
//! unreachable ([`Fleet::is_global`] false) every instance enforces
//! `limit ÷ expected_instances` on its own counts, and those admissions are
//! not reported later as one burst.

mod counter;
mod scope;
mod sync;
mod view;

pub use counter::{GlobalAdmit, GlobalCounter, FLEET_BUCKETS};
pub use scope::Scope;
pub use sync::{GlobalSync, LeaseAsk, Section, SectionKind, SectionReply, SyncItem};
pub use view::{BlockChange, Fleet, FleetSettings};
