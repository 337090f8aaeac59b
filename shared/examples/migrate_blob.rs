//! Rewrites model blobs of format version 1 or 2 (CRC-32 trailer) as version 3 (word sums,
//! the cheaper boot check), in place; the layers and weights stay byte for byte.
//!
//! `cargo run -p mcugan-shared --features alloc --example migrate_blob -- BLOB...`

use mcugan_shared::encode::set_version;
use mcugan_shared::format::FORMAT_VERSION;
use mcugan_shared::Model;

fn main() {
    let mut failed = false;
    for path in std::env::args().skip(1) {
        let result = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|mut blob| {
                Model::parse(&blob).map_err(|e| format!("invalid model: {e}"))?;
                if !set_version(&mut blob, FORMAT_VERSION as u8) {
                    return Err("its preamble cannot be rewritten".to_string());
                }
                Model::parse(&blob).map_err(|e| format!("after migration: {e}"))?;
                std::fs::write(&path, &blob).map_err(|e| e.to_string())?;
                Ok(blob.len())
            });
        match result {
            Ok(len) => println!("{path}: version {FORMAT_VERSION}, {len} bytes"),
            Err(e) => {
                eprintln!("{path}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
