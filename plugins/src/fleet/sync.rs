//! The batches a global policy trades with the fleet's store each interval.

/// What a section counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// Admitted requests per key (a global rate limit), leased to
    /// instances; `instances` is the N a young key's grants are divided by.
    Counter { instances: u32 },
    /// Events per candidate key of a hot-key rule. The store marks a key hot
    /// when its fleet total reaches `threshold`, keeps it hot while the total
    /// holds `hold_at` and for `hot_ttl_ms` after, and announces both changes.
    Hot {
        threshold: u64,
        hold_at: u64,
        hot_ttl_ms: u64,
    },
}

/// One key's part of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncItem {
    /// The key's fleet-wide hash ([`super::Fleet::hasher`]).
    pub hash: u64,
    /// Counted here since the last sync, added to the store as is: a hot
    /// key's events, or a limit's admissions made without a lease. May be 0
    /// (the key's fleet total is still wanted).
    pub delta: u32,
    /// The key's text, for hot-key events; empty for counters.
    pub name: String,
    /// Limits only: the lease this instance asks for.
    pub lease: Option<LeaseAsk>,
}

/// A request for the right to admit `want` more requests of a key until the
/// next sync. The store grants at most what the key's limit leaves in the
/// window, atomically, so no two instances are granted the same headroom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAsk {
    pub want: u32,
    pub limit: u64,
    /// Unspent requests of the previous lease, handed back...
    pub give_back: u32,
    /// ...to the store bucket they were granted in.
    pub from_bucket: u64,
}

/// One policy's part of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The policy's name: the same on every instance of a fleet.
    pub policy: String,
    pub kind: SectionKind,
    pub window_ms: u64,
    pub buckets: u32,
    pub items: Vec<SyncItem>,
}

impl Section {
    /// A section with nothing to send.
    pub fn empty(policy: &str) -> Self {
        Self {
            policy: policy.to_string(),
            kind: SectionKind::Counter { instances: 1 },
            window_ms: 1000,
            buckets: 1,
            items: Vec::new(),
        }
    }
}

/// The fleet's answer to a section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SectionReply {
    /// The fleet-wide windowed total of each item, in the section's order.
    pub totals: Vec<u64>,
    /// For hot sections: every key hot fleet-wide now, `(hash, text)`.
    pub hot: Vec<(u64, String)>,
    /// For counter sections: the lease granted to each item.
    pub grants: Vec<u64>,
    /// The store bucket this answer's grants were counted in.
    pub bucket: u64,
}

/// A policy whose state is shared with the fleet.
pub trait GlobalSync: Send + Sync {
    /// Takes the deltas counted since the last collect (at most `max_items`
    /// keys; the rest wait for the next sync).
    fn collect(&self, now: u64, max_items: usize) -> Section;
    /// The store answered `section`.
    fn apply(&self, section: &Section, reply: &SectionReply, now: u64);
    /// The sync carrying `section` failed; its deltas are dropped.
    fn abandon(&self, section: &Section);
    /// Another instance (or the store itself) announced that a key turned
    /// hot (`hot`) or cooled fleet-wide. Only hot-key rules care.
    fn fleet_hot(&self, _hash: u64, _key: &str, _count: u64, _hot: bool, _now: u64) {}
}
