//! Change requests and their items: the state machines, and the pure rules every layer above applies.
//!
//! - [`plan`]: what one table's item is (change, skip, or blocked and why), from what the inventory and KMS say.
//! - [`apply`]: what a worker does next for an item (send, wait, done, retry later, fail and why), from what
//!   DescribeTable shows.
//! - [`calls`]: the UpdateTable calls a planned change will make, from the worker's own rule.
//! - [`reason`]: the one map from a failed AWS call to the reason an item records.
//!
//! Nothing here does I/O: the planner and the workers in `engine` read AWS and Postgres, ask these functions,
//! and perform what they return.

pub mod apply;
mod calls;
mod model;
pub mod plan;
pub mod reason;
mod state;

pub use apply::{ApplyTarget, PollStep, SendClock, Step};
pub use calls::PlannedCall;
pub use model::{
    ChangeItem, ChangeOptions, ChangeRequest, ItemCounts, KeyRotation, PlanSummary, RequestTargets,
    SelectorSpec, TableRef, TargetSpec,
};
pub use plan::{KeyInfo, PlannedItem, ReplicaPlan, Resolution, plan_table, summarize};
pub use reason::{AwsCall, failure_reason};
pub use state::{ItemReason, ItemState, PlanAction, RequestState};
