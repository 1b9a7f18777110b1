//! Regenerates the seed corpora in `fuzz/seeds/<target>/` from `src/seeds.rs`:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example write_seeds

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    messageu_fuzz::seeds::write_all(&dir)?;
    println!("seeds written to {}", dir.display());
    Ok(())
}
