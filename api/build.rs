//! Compiles the page (`web/dist`, built by `make web`) into the api binary: one table of
//! (path, content type, bytes, gzip bytes), so the api serves the page with nothing beside it.

use std::io::Write;
use std::path::{Path, PathBuf};

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut paths = Vec::new();
    files(&dist, &mut paths);
    paths.sort();
    if !paths.iter().any(|p| p.ends_with("index.html")) {
        println!(
            "cargo:warning=web/dist has no index.html: the api serves no page (run `make web`)"
        );
    }
    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    for path in &paths {
        let relative =
            path.strip_prefix(&dist).expect("under dist").to_string_lossy().replace('\\', "/");
        let bytes = std::fs::read(path).expect("an asset reads");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip in memory");
        let gz_path = out_dir.join(format!("{}.gz", relative.replace('/', "__")));
        std::fs::write(&gz_path, gz.finish().expect("gzip in memory"))
            .expect("OUT_DIR is writable");
        table.push_str(&format!(
            "    Asset {{ path: {relative:?}, content_type: {:?}, bytes: include_bytes!({:?}), gzip: include_bytes!({:?}) }},\n",
            content_type(path),
            path.canonicalize().expect("an asset exists").display().to_string(),
            gz_path.display().to_string(),
        ));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("page_assets.rs"), table).expect("OUT_DIR is writable");
}
