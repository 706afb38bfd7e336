//! The vocabulary every stage shares: tenants, label sets, profile type IDs, label selectors,
//! time arguments, the merged flame tree (what queries produce and renderers read) and the
//! current query's deadline. Nothing here does I/O.

mod deadline;
mod flame;
mod labels;
mod profile_id;
mod profile_type;
mod selector;
mod tenant;
mod time;

pub use deadline::{Deadline, DeadlinePassed, Ticker};
pub use flame::{FlameNode, FlameTree, OTHER_NAME, ROOT_NAME};
pub use labels::{LabelError, Labels, valid_label_name};
pub use profile_id::{ProfileId, ProfileIdError, series_fingerprint};
pub use profile_type::{ProfileType, ProfileTypeError};
pub use selector::{MatchOp, Matcher, Selector, SelectorError};
pub use tenant::{DEFAULT_TENANT, Tenant, TenantError};
pub use time::{MAX_TIME_MS, TimeError, TimeWindow, duration_ms, parse_time_ms, time_in_range};

/// Label carrying the profile name (`process_cpu`, `memory`, …), first part of a profile type ID.
pub const LABEL_NAME: &str = "__name__";
/// Label carrying the full profile type ID of a series.
pub const LABEL_PROFILE_TYPE: &str = "__profile_type__";
/// Label naming the service a series belongs to.
pub const LABEL_SERVICE_NAME: &str = "service_name";
/// Label marking a pushed profile as already holding deltas (`"false"`).
pub const LABEL_DELTA: &str = "__delta__";
