//! Authentication of every request (see `crate::auth`): one middleware over the whole router,
//! so a route cannot be added without a decision here ([`route_access`]; a route it does not
//! name needs read *and* write access to its tenant).
//!
//! - Open, with or without tokens: `/` (the UI's static page: no data; its API calls carry the
//!   credentials), `/ready`, `/metrics` and `/debug/pprof/profile` (Pyrite's own state, read by
//!   Prometheus, probes and Pyrite's self-scrape, which have no tenant credentials).
//! - `/internal/v1/head`: the cluster secret only (404 when no cluster is configured).
//! - Everything else, when `auth.tokens_file` is set: credentials (else 401 with
//!   `WWW-Authenticate`) allowed to read or write the request's tenant (else 403
//!   `permission_denied`). A request without `X-Scope-OrgID` acts for the one tenant its
//!   credentials may read (or write), if there is exactly one; otherwise for `anonymous`, as
//!   without tokens.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::SharedState;
use super::connect::{Code, ConnectError};
use super::tenant::{TENANT_HEADER, tenant_from_headers};
use crate::auth::{Access, CLUSTER_SECRET_HEADER, Credential, Tokens};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAccess {
    Open,
    /// The cluster secret.
    Peer,
    /// Credentials for the request's tenant, when tokens are on.
    Tenant(Access),
}

/// The access each route needs, by path (for settings.v1, its method's).
pub fn route_access(path: &str) -> RouteAccess {
    match path {
        "/" | "/ready" | "/metrics" | "/debug/pprof/profile" => RouteAccess::Open,
        // The web UI's files: the page must load before anyone has typed a token.
        "/index.html" => RouteAccess::Open,
        ui if ui.starts_with("/assets/") || ui.starts_with("/public/") => RouteAccess::Open,
        crate::cluster::HEAD_ROUTE => RouteAccess::Peer,
        "/push.v1.PusherService/Push"
        | "/ingest"
        | "/pyroscope/ingest"
        | super::otlp::HTTP_PATH
        | super::otlp::GRPC_PATH => RouteAccess::Tenant(Access::Write),
        "/pyroscope/render"
        | "/pyroscope/render-diff"
        | "/pyroscope/label-values"
        | "/pyroscope/labels"
        | "/api/v1/render"
        | "/api/v1/render-diff"
        | "/settings.v1.SettingsService/Get" => RouteAccess::Tenant(Access::Read),
        "/settings.v1.SettingsService/Set" | "/settings.v1.SettingsService/Delete" => {
            RouteAccess::Tenant(Access::Write)
        }
        path if path.starts_with("/querier.v1.QuerierService/") => RouteAccess::Tenant(Access::Read),
        // Ad-hoc uploads too: the Profiles Drilldown app sends them with the data source's
        // (read) credentials, and they never touch series data (per-tenant caps bound them).
        path if path.starts_with("/adhocprofiles.v1.AdHocProfileService/") => RouteAccess::Tenant(Access::Read),
        // What Pyrite is: asked by Grafana with the same read credentials.
        "/capabilities.v1.FeatureFlagsService/GetFeatureFlags"
        | "/version.v1.Version/Version"
        | "/status.v1.StatusService/GetBuildInfo"
        | "/api/v1/status/buildinfo" => RouteAccess::Tenant(Access::Read),
        _ => RouteAccess::Tenant(Access::ReadWrite),
    }
}

/// The middleware: answers 401/403/404 itself, or passes the request on without its
/// credentials (no handler can log what it never sees).
pub async fn authenticate(State(state): State<SharedState>, mut request: Request, next: Next) -> Response {
    match route_access(request.uri().path()) {
        RouteAccess::Open => {}
        RouteAccess::Peer => {
            let Some(secret) = &state.auth.cluster_secret else {
                return super::closing_connection(ConnectError::not_found("no cluster is configured").into_response());
            };
            if !secret.verify(request.headers().get(CLUSTER_SECRET_HEADER)) {
                tracing::warn!(
                    route = crate::cluster::HEAD_ROUTE,
                    "refused a peer request without the cluster secret"
                );
                return super::closing_connection(
                    ConnectError::unauthenticated("this route is for the cluster's replicas only").into_response(),
                );
            }
            request.headers_mut().remove(CLUSTER_SECRET_HEADER);
        }
        RouteAccess::Tenant(access) => {
            if let Some(tokens) = &state.auth.tokens {
                let require_tenant = state.config.require_tenant_header;
                if let Err(refusal) = authorize(tokens, access, require_tenant, request.headers_mut()) {
                    // Refused unread: the body's rest must not be taken for the next request.
                    return super::closing_connection(*refusal);
                }
            }
        }
    }
    next.run(request).await
}

/// Checks the request's credentials for its tenant; the refusal to answer otherwise.
fn authorize(
    tokens: &Tokens,
    access: Access,
    require_tenant: bool,
    headers: &mut HeaderMap,
) -> Result<(), Box<Response>> {
    let Some(credential) = Credential::from_headers(headers) else {
        tracing::debug!("refused a request without credentials");
        return Err(challenge("credentials required: Authorization: Bearer <token>, or basic auth").into());
    };
    let Some(grant) = tokens.authenticate(&credential) else {
        tracing::warn!(scheme = credential.scheme(), "refused unknown credentials");
        return Err(challenge("unknown credentials").into());
    };
    headers.remove(header::AUTHORIZATION);
    if !headers.contains_key(TENANT_HEADER)
        && let Some(only) = grant.only_tenant(access)
    {
        let value = HeaderValue::from_str(only.as_str()).expect("a tenant ID is a valid header value");
        headers.insert(TENANT_HEADER, value);
    }
    let tenant = tenant_from_headers(headers, require_tenant).map_err(|err| Box::new(err.into_response()))?;
    if !grant.allows(access, &tenant) {
        tracing::warn!(credentials = %grant.name, %tenant, %access, "refused: tenant not allowed for these credentials");
        return Err(ConnectError::new(
            Code::PermissionDenied,
            format!("these credentials may not {access} tenant {tenant}"),
        )
        .into_response()
        .into());
    }
    Ok(())
}

/// 401 `unauthenticated` with both schemes offered (a browser on the UI asks for basic auth).
fn challenge(message: &str) -> Response {
    let mut response = ConnectError::unauthenticated(message).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"pyrite\""),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"pyrite\", charset=\"UTF-8\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_access() {
        let access = route_access;
        for open in [
            "/",
            "/ready",
            "/metrics",
            "/debug/pprof/profile",
            "/index.html",
            "/assets/index-l1tjBHYd.js",
            "/public/build/img/icons/unicons/search.svg",
        ] {
            assert_eq!(access(open), RouteAccess::Open, "{open}");
        }
        assert_eq!(access("/internal/v1/head"), RouteAccess::Peer);
        for write in [
            "/push.v1.PusherService/Push",
            "/ingest",
            "/pyroscope/ingest",
            crate::api::otlp::HTTP_PATH,
            crate::api::otlp::GRPC_PATH,
            "/settings.v1.SettingsService/Set",
            "/settings.v1.SettingsService/Delete",
        ] {
            assert_eq!(access(write), RouteAccess::Tenant(Access::Write), "{write}");
        }
        for read in [
            "/querier.v1.QuerierService/SelectMergeStacktraces",
            "/querier.v1.QuerierService/ProfileTypes",
            "/pyroscope/render",
            "/pyroscope/render-diff",
            "/pyroscope/label-values",
            "/pyroscope/labels",
            "/api/v1/render",
            "/api/v1/render-diff",
            "/settings.v1.SettingsService/Get",
            "/adhocprofiles.v1.AdHocProfileService/Upload",
            "/adhocprofiles.v1.AdHocProfileService/List",
            "/capabilities.v1.FeatureFlagsService/GetFeatureFlags",
            "/version.v1.Version/Version",
            "/api/v1/status/buildinfo",
        ] {
            assert_eq!(access(read), RouteAccess::Tenant(Access::Read), "{read}");
        }
        for other in ["/settings.v1.SettingsService/GetAll", "/internal/v1/head/", "/anything"] {
            assert_eq!(access(other), RouteAccess::Tenant(Access::ReadWrite), "{other}");
        }
    }
}
