//! The console's static files, at `GET /` and below: built into the binary (`build.rs`), or
//! read from `--console-dir` (a console being worked on, without rebuilding the gateway).

use std::path::{Component, Path, PathBuf};

use http::{HeaderValue, StatusCode, header};

use crate::reply::{self, Response};

include!(concat!(env!("OUT_DIR"), "/console.rs"));

/// Largest file served from `--console-dir`.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Shown when the binary was built without the console.
const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>bookmesh</title>\
<h1>bookmesh gateway</h1><p>This binary was built without the console. Build it with \
<code>make console</code> (Node.js 20 or later), then rebuild the gateway \
(<code>make run</code> does both).</p><p>The API works regardless: \
<code>POST /&lt;package.Service&gt;/&lt;Method&gt;</code> with JSON or gRPC-Web \
(docs/gateway.md).</p>";

/// Where the files come from.
pub enum Console {
    Embedded,
    Dir(PathBuf),
}

impl Console {
    pub fn new(dir: Option<PathBuf>) -> Self {
        dir.map_or(Self::Embedded, Self::Dir)
    }

    /// The file at `path` (`/` is `index.html`), or 404.
    pub async fn serve(&self, path: &str) -> Response {
        let Some(relative) = relative_path(path) else {
            return not_found();
        };
        let contents = match self {
            Self::Embedded => {
                if EMBEDDED.is_empty() {
                    return if relative == "index.html" {
                        reply::with(StatusCode::OK, "text/html; charset=utf-8", NOT_BUILT)
                    } else {
                        not_found()
                    };
                }
                EMBEDDED
                    .iter()
                    .find(|(name, _)| *name == relative)
                    .map(|(_, bytes)| bytes.to_vec())
            }
            Self::Dir(dir) => read_bounded(&dir.join(&relative)).await,
        };
        let Some(contents) = contents else {
            return not_found();
        };
        let mut response = reply::with(StatusCode::OK, content_type(&relative), contents);
        let headers = response.headers_mut();
        // Vite names assets by their hash: they never change under one name. The page itself
        // must be fetched again to pick up a new build.
        let cache = if relative.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Only this origin's scripts, styles and calls; never framed (clickjacking).
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                 frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }
}

/// `path` as a file under the console's root: `index.html` for `/`, `None` for anything
/// that could leave the root (`..`, absolute parts, backslashes, NUL).
fn relative_path(path: &str) -> Option<String> {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return Some("index.html".to_owned());
    }
    if path.contains(['\\', '\0']) || path.len() > 512 {
        return None;
    }
    Path::new(path)
        .components()
        .all(|part| matches!(part, Component::Normal(_)))
        .then(|| path.to_owned())
}

async fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    if !metadata.is_file() || metadata.len() > MAX_FILE_BYTES {
        return None;
    }
    tokio::fs::read(path).await.ok()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn not_found() -> Response {
    reply::error(StatusCode::NOT_FOUND, "not_found", "no such page")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_console_root() {
        assert_eq!(relative_path("/").as_deref(), Some("index.html"));
        assert_eq!(
            relative_path("/assets/index-abc.js").as_deref(),
            Some("assets/index-abc.js")
        );
        for escape in ["/../etc/passwd", "/assets/../../x", "/a\\b", "/./x"] {
            assert_eq!(relative_path(escape), None, "{escape}");
        }
    }
}
