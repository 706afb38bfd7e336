//! Tenant resolution from `X-Scope-OrgID` (the rules are `params::tenant`'s).

use axum::http::HeaderMap;

use super::connect::ConnectError;
use crate::model::Tenant;
use crate::params::{self, ParamsError};

pub const TENANT_HEADER: &str = "x-scope-orgid";

/// The tenant a request acts for: its `X-Scope-OrgID`, else `anonymous` unless the header is
/// required. Reads naming several tenants (`a|b`) are not supported yet and are refused.
pub fn tenant_from_headers(headers: &HeaderMap, required: bool) -> Result<Tenant, ConnectError> {
    let id = headers
        .get(TENANT_HEADER)
        .map(|value| value.to_str().map_err(|_| ParamsError::TenantNotAscii))
        .transpose()?;
    Ok(params::tenant(id, required)?)
}
