//! Tenant resolution from `X-Scope-OrgID`.

use axum::http::HeaderMap;

use super::connect::ConnectError;
use crate::model::Tenant;

pub const TENANT_HEADER: &str = "x-scope-orgid";

/// The tenant a request acts for: its `X-Scope-OrgID`, else `anonymous` unless the header is
/// required. Reads naming several tenants (`a|b`) are not supported yet and are refused.
pub fn tenant_from_headers(headers: &HeaderMap, required: bool) -> Result<Tenant, ConnectError> {
    let Some(value) = headers.get(TENANT_HEADER) else {
        if required {
            return Err(ConnectError::unauthenticated(
                "no tenant: the X-Scope-OrgID header is required",
            ));
        }
        return Ok(Tenant::anonymous());
    };
    let value = value
        .to_str()
        .map_err(|_| ConnectError::invalid_argument("X-Scope-OrgID is not valid ASCII"))?;
    if value.contains('|') {
        return Err(ConnectError::invalid_argument(
            "queries across several tenants (a|b) are not supported",
        ));
    }
    Tenant::parse(value).map_err(|err| ConnectError::invalid_argument(format!("X-Scope-OrgID: {err}")))
}
