//! The web UI's files, built from `ui/` by `make ui` and embedded at compile time (`build.rs`
//! lists `ui/dist`): `/` (index.html), `/assets/*` (Vite's hashed bundles) and
//! `/public/build/img/icons/*` (the icons @grafana/ui fetches from Grafana's own path).
//! A binary built before the UI serves a page that says how to build it.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// One embedded file; `gzip` is the build's precompressed copy, when it made one.
pub struct Asset {
    pub path: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Pyrite: web UI not built</title></head><body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
<h1>The web UI is not in this binary</h1>\
<p>This <code>pyrite</code> was compiled before the UI was built. From the source tree, run</p>\
<pre>make ui      # npm ci and vite build in ui/\ncargo build  # embeds ui/dist</pre>\
<p>or <code>make run</code>, which does both. The HTTP API works without it: \
<code>/querier.v1.QuerierService/*</code>, <code>/api/v1/render</code>, <code>/ready</code>, <code>/metrics</code>.</p>\
</body></html>";

fn find(path: &str) -> Option<&'static Asset> {
    UI_ASSETS.iter().find(|asset| asset.path == path)
}

/// Whether this binary carries a built UI.
pub fn is_built() -> bool {
    find("/index.html").is_some()
}

pub async fn index(headers: HeaderMap) -> Response {
    match find("/index.html") {
        Some(asset) => serve(asset, &headers),
        None => Html(NOT_BUILT).into_response(),
    }
}

/// `/assets/{*path}`.
pub async fn bundle(Path(path): Path<String>, headers: HeaderMap) -> Response {
    lookup(&format!("/assets/{path}"), &headers)
}

/// `/public/{*path}`.
pub async fn public(Path(path): Path<String>, headers: HeaderMap) -> Response {
    lookup(&format!("/public/{path}"), &headers)
}

fn lookup(path: &str, headers: &HeaderMap) -> Response {
    match find(path) {
        Some(asset) => serve(asset, headers),
        None if !is_built() => (StatusCode::NOT_FOUND, Html(NOT_BUILT)).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no UI file {path}\n")).into_response(),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, extension)| extension) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Vite names bundles after their content, so they never change under one name; index.html
/// names the current bundles, so a browser must revalidate it (cheap: ETag → 304).
fn cache_control(path: &str) -> &'static str {
    if path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else if path.starts_with("/public/") {
        "public, max-age=86400"
    } else {
        "no-cache"
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused =
                parts.any(|param| matches!(param.replace(' ', "").as_str(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == asset.etag || tag.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match asset.gzip.filter(|_| accepts_gzip(headers)) {
            Some(gzip) => {
                let mut response = Body::from(gzip).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                response
            }
            None => Body::from(asset.body).into_response(),
        }
    };
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(asset.path)));
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control(asset.path)),
    );
    response_headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    // The body differs by Accept-Encoding; caches must keep the two apart.
    if asset.gzip.is_some() {
        response_headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        assert!(accepts_gzip(&with(header::ACCEPT_ENCODING, "gzip, deflate, br")));
        assert!(accepts_gzip(&with(header::ACCEPT_ENCODING, "br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with(header::ACCEPT_ENCODING, "*")));
        assert!(!accepts_gzip(&with(header::ACCEPT_ENCODING, "gzip;q=0, br")));
        assert!(!accepts_gzip(&with(header::ACCEPT_ENCODING, "identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn hashed_bundles_are_immutable_and_the_page_is_revalidated() {
        assert_eq!(
            cache_control("/assets/index-l1tjBHYd.js"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cache_control("/index.html"), "no-cache");
        assert_eq!(
            content_type("/assets/index-l1tjBHYd.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("/public/build/img/icons/unicons/search.svg"),
            "image/svg+xml"
        );
        assert_eq!(content_type("/no-extension"), "application/octet-stream");
    }
}
