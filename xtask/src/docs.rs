//! `cargo xtask docs`: checks the manual's links (see [`crate::doc_links`]) and builds the book
//! in `docs/` with mdBook, installing mdBook (`cargo install`, without its web server and file
//! watcher) when it is missing.

use std::path::Path;

use anyhow::{bail, Result};

use crate::doc_links;
use crate::quiet;
use crate::util::*;

/// The mdBook release the book is written for (its `book.toml` keys and include syntax).
const MDBOOK_VERSION: &str = "0.5.4";

pub(crate) fn docs(root: &Path) -> Result<()> {
    step("checking the README's and the book's links");
    let problems = doc_links::check(root)?;
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("  {problem}");
        }
        bail!("{} problem(s) in the manual's links", problems.len());
    }
    eprintln!("  all links and anchors resolve");
    if !have("mdbook") {
        quiet::run(
            root,
            &format!("installing mdBook {MDBOOK_VERSION} (cargo install)"),
            &mut cargo(&[
                "install",
                "mdbook",
                "--locked",
                "--version",
                MDBOOK_VERSION,
                "--no-default-features",
                "--features",
                "search",
            ]),
        )?;
    }
    step("building the book (mdBook)");
    run(std::process::Command::new("mdbook")
        .args(["build", "docs"])
        .current_dir(root))?;
    eprintln!(
        "\nthe book: {}",
        root.join("docs/book/index.html").display()
    );
    Ok(())
}
