//! Overload protection that needs no number: an adaptive concurrency limit
//! per upstream cluster ([`limit`]), learned from round trips, behind a short
//! queue by priority that then refuses fast ([`gate`]).
//!
//! Every cluster has one gate unless its config says `overload: off`
//! ([`config`]); a route's `priority:` picks its requests' class
//! ([`priority`]). The gateway takes a place after a route's policies let a
//! request through and frees it when the provider answers
//! (`gateway/src/proxy/overload.rs`).
//!
//! Known gap: a provider that gets much faster (its slowdown ends). The
//! baseline falls back only partly: the first batch after the change mixes
//! calls of both paces, and each later one holds the queue the too-high
//! baseline lets build (simulated, 16 workers back from 1 s to 100 ms: 31 to
//! 37 in flight, about twice the round trip, where 20 would do).
//!
//! Known gap: several gateways in front of one provider. The baseline does
//! not expire (it falls, and rises only at the floor, see [`baseline`]), so
//! a gateway that once saw the provider unloaded keeps its pace however
//! long the shared queue stands. But a gateway that *starts* behind the
//! others' queue takes that queue for the provider's pace and never sees it
//! drain: it holds more than its share and the fleet a standing queue.
//! Simulated, 48 workers at 100 ms, 300 callers per gateway, all starting
//! together, goodput full in every case: 3 gateways keep 58..70 in flight
//! (63..81 with ±20% jitter in service time), 5 gateways 145..157, three
//! times the workers (the ignored test
//! `a_fleet_of_five_gateways_settles_near_the_providers_capacity`). Curing
//! it needs the fleet's queue to drain once, which no single gateway can
//! cause; a synchronised drain (every gateway at its floor for one round
//! trip at the same wall-clock second) is the candidate, at the price of a
//! short dip Envoy's users complained of.

mod baseline;
pub mod config;
mod first;
pub mod gate;
pub mod limit;
pub mod priority;

pub use config::{OverloadBounds, OverloadFile, OverloadSettings};
pub use gate::{Change, Class, Gate, GateReport, GateSettings, GateSlot, Refused};
pub use limit::{AdaptiveLimit, LimitSettings, Sample, Slot};
pub use priority::{Priority, PriorityFile};

#[cfg(test)]
mod gate_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
