//! The usage page under `/app/` (docs/page.md): the files of `web/dist`, compiled into the binary
//! by `build.rs`, served with the page's security headers. Any `/app/` path that is not a file
//! is the page itself (it routes in the browser).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

/// One file of the page.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/page_assets.rs"));

/// No inline script or style, nothing from elsewhere, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: &'static Asset, headers: &HeaderMap, immutable: bool) -> Response {
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let body = if gzip { asset.gzip } else { asset.bytes };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-store"
        }),
    );
    secure(response)
}

/// Whether an `Accept-Encoding` value takes gzip (named, with a weight above zero).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let named = parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"));
        let weight = parts
            .find_map(|p| p.strip_prefix("q="))
            .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok());
        named && weight.is_some_and(|w| w > 0.0)
    })
}

/// The page's security headers, on every answer under `/app/` (and `no-store` unless the answer
/// set its own caching).
pub fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn index(headers: &HeaderMap) -> Response {
    match asset("index.html") {
        Some(index) => serve(index, headers, false),
        None => secure(
            crate::error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "page_not_built",
                "this api was built without the page (web/dist was empty): build it with `make build`",
            )
            .into_response(),
        ),
    }
}

/// `GET /app/`.
pub async fn root(headers: HeaderMap) -> Response {
    index(&headers)
}

/// `GET /app/{*path}`: a file of the page (hashed names, cached for good), else the page.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match asset(&path) {
        Some(found) if path != "index.html" => serve(found, &headers, path.starts_with("assets/")),
        _ if path.starts_with("assets/") => {
            secure(crate::error::ApiError::not_found("no such file").into_response())
        }
        _ => index(&headers),
    }
}

/// `GET /` and `GET /app`: to the page.
pub async fn to_page() -> Redirect {
    Redirect::to("/app/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_sent_only_to_who_takes_it() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, GZIP;q=0.5"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("gzip; q=0.000, br"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip("xgzip"));
    }
}
