//! The manual's own checks: every relative link and `#anchor` in the README and the book
//! resolves, the book links only inside itself (its HTML has no repository around it), nothing
//! links out of the repository, every chapter is in `SUMMARY.md`, and the README stays short.
//! `cargo xtask docs` runs them before it builds the book; a test here runs them on the
//! repository, so `cargo xtask test` (CI) fails on a broken link.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

/// The README's size limit: what it is, the two commands, a picture, the features and links
/// into the book; the rest is the book's.
pub(crate) const README_MAX_BYTES: usize = 12 * 1024;

/// The book's source folder, relative to the repository root.
pub(crate) const BOOK_SRC: &str = "docs/src";

/// One link, image or include in a Markdown file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    /// 1-based line.
    line: usize,
    /// As written: `path`, `path#anchor` or `#anchor`.
    target: String,
    /// An mdBook `{{#include}}`: a file, no anchor.
    include: bool,
}

/// The Markdown outside fenced code blocks, line by line (code lines blanked, so that line
/// numbers stay right).
fn prose_lines(text: &str) -> Vec<String> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return String::new();
            }
            if fenced {
                String::new()
            } else {
                strip_code_spans(line)
            }
        })
        .collect()
}

/// `line` with its inline code spans blanked (a link written inside backticks is not one).
fn strip_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for ch in line.chars() {
        if ch == '`' {
            in_code = !in_code;
            out.push(' ');
        } else if in_code {
            out.push(' ');
        } else {
            out.push(ch);
        }
    }
    out
}

/// The links (`[label](target)`, `![alt](target)`) and mdBook includes of a Markdown text.
fn links(text: &str) -> Vec<Link> {
    let mut found = Vec::new();
    for (index, line) in prose_lines(text).iter().enumerate() {
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(offset) = line[i..].find("](") {
            let start = i + offset + 2;
            let mut depth = 1;
            let mut end = start;
            while end < bytes.len() {
                match bytes[end] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                end += 1;
            }
            let target = line[start..end.min(bytes.len())].trim();
            // `[label](target "title")`: the title is not part of the target.
            let target = target.split_whitespace().next().unwrap_or("");
            if !target.is_empty() {
                found.push(Link {
                    line: index + 1,
                    target: target.to_string(),
                    include: false,
                });
            }
            i = end.min(bytes.len());
        }
    }
    // Includes are directives, written in prose; code blocks may quote them.
    for (index, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("{{#include ") {
            let after = &rest[start + "{{#include ".len()..];
            let Some(end) = after.find("}}") else { break };
            let spec = after[..end].trim();
            // `path:from:to` or `path:anchor`: the path is before the first colon.
            let path = spec.split(':').next().unwrap_or(spec);
            found.push(Link {
                line: index + 1,
                target: path.to_string(),
                include: true,
            });
            rest = &after[end..];
        }
    }
    found
}

/// A heading's anchor as GitHub and mdBook make it: lower case, letters, digits, `_` and `-`
/// kept, spaces to `-`, the rest dropped (links written as `[label](target)` keep the label).
pub(crate) fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // Links in a heading count by their label.
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(close), Some(paren)) if close < paren => {
                text.push_str(&after[..close]);
                rest = &after[paren + 1..];
            }
            _ => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.trim()
        .chars()
        .filter_map(|ch| {
            if ch.is_alphanumeric() || ch == '_' || ch == '-' {
                Some(ch.to_lowercase().next().unwrap_or(ch))
            } else if ch == ' ' {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The anchors a Markdown text's headings make (a repeated heading gets `-1`, `-2`, …).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut all = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..].replace('`', ""));
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        all.insert(anchor);
    }
    all
}

/// `path` with `.` and `..` resolved lexically.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The Markdown files of the book's source, recursively, sorted.
fn book_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![root.join(BOOK_SRC)];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Every problem with the README and the book, one line each (`file:line: what`); empty when
/// all is well.
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let root = normalise(&fs::canonicalize(root).context("finding the repository root")?);
    let book = root.join(BOOK_SRC);
    let mut problems = Vec::new();
    let readme = root.join("README.md");
    let readme_text = fs::read_to_string(&readme).context("reading README.md")?;
    if readme_text.len() > README_MAX_BYTES {
        problems.push(format!(
            "README.md: {} bytes, more than its {README_MAX_BYTES}: move detail into the book",
            readme_text.len()
        ));
    }
    let mut files = vec![readme];
    files.extend(book_files(&root)?);
    let mut anchor_cache: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    for file in &files {
        let text =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let in_book = file.starts_with(&book);
        for link in links(&text) {
            let at = format!("{shown}:{}", link.line);
            let target = link.target.as_str();
            if target.contains("://") || target.starts_with("mailto:") || target.starts_with("//") {
                problems.push(format!(
                    "{at}: {target} leads out of the repository: the manual links only to its own files"
                ));
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target, None),
            };
            let dir = file.parent().unwrap_or(&root);
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                normalise(&dir.join(path))
            };
            if !resolved.starts_with(&root) {
                problems.push(format!("{at}: {target} is outside the repository"));
                continue;
            }
            if in_book && !link.include && !resolved.starts_with(&book) {
                problems.push(format!(
                    "{at}: {target} is outside the book ({BOOK_SRC}), so its HTML cannot reach it: \
                     name the file as code, or include it"
                ));
                continue;
            }
            if !resolved.exists() {
                problems.push(format!("{at}: {target}: no such file"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if resolved.extension().is_none_or(|e| e != "md") {
                problems.push(format!(
                    "{at}: {target}: an anchor into a file that is not Markdown"
                ));
                continue;
            }
            let known = match anchor_cache.get(&resolved) {
                Some(known) => known,
                None => {
                    let text = fs::read_to_string(&resolved)
                        .with_context(|| format!("reading {}", resolved.display()))?;
                    anchor_cache
                        .entry(resolved.clone())
                        .or_insert(anchors(&text))
                }
            };
            if !known.contains(anchor) {
                problems.push(format!("{at}: {target}: no heading makes #{anchor}"));
            }
        }
    }
    problems.extend(summary_problems(&root, &files)?);
    Ok(problems)
}

/// Chapters missing from `SUMMARY.md`, and its entries that are not files.
fn summary_problems(root: &Path, files: &[PathBuf]) -> Result<Vec<String>> {
    let book = root.join(BOOK_SRC);
    let summary = book.join("SUMMARY.md");
    let text = fs::read_to_string(&summary).context("reading the book's SUMMARY.md")?;
    let listed: BTreeSet<PathBuf> = links(&text)
        .iter()
        .map(|l| normalise(&book.join(&l.target)))
        .collect();
    let mut problems = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.starts_with(&book) && **f != summary)
    {
        if !listed.contains(file) {
            problems.push(format!(
                "{}: not in {BOOK_SRC}/SUMMARY.md, so the book leaves it out",
                file.strip_prefix(root).unwrap_or(file).display()
            ));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_and_the_book_have_no_broken_link() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let problems = check(&root).unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn links_outside_code_are_found_and_code_is_skipped() {
        let text = "See [a](a.md#x) and ![p](img/p.png \"t\").\n\
                    `[not](a link)`\n```\n[nor](this)\n```\n{{#include ../r.md:3:9}}\n";
        let found = links(text);
        let targets: Vec<&str> = found.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(targets, ["a.md#x", "img/p.png", "../r.md"]);
        assert!(found[2].include);
        assert_eq!(found[2].line, 6);
    }

    #[test]
    fn anchors_follow_the_heading_rules() {
        assert_eq!(
            slug("Quality: FID, IS analogue, class coverage (mcugan eval)"),
            "quality-fid-is-analogue-class-coverage-mcugan-eval"
        );
        assert_eq!(slug("[dcgan.py](x.md) facts"), "dcganpy-facts");
        let found = anchors("# Top\n## Same\n## Same\n```\n# not a heading\n```\n");
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            ["same", "same-1", "top"]
        );
    }

    #[test]
    fn a_broken_link_an_outside_link_and_a_missing_chapter_are_reported() {
        let root = std::env::temp_dir().join(format!("mcugan-doc-links-{}", std::process::id()));
        let book = root.join(BOOK_SRC);
        fs::create_dir_all(book.join("part")).unwrap();
        fs::write(
            root.join("README.md"),
            "[ok](docs/src/a.md#title) [bad](docs/src/a.md#nope) [gone](missing.md)\n",
        )
        .unwrap();
        fs::write(book.join("SUMMARY.md"), "- [A](a.md)\n").unwrap();
        fs::write(
            book.join("a.md"),
            "# Title\n[up](../../README.md) [web](https://example.org)\n",
        )
        .unwrap();
        fs::write(book.join("part/b.md"), "# B\n").unwrap();
        let problems = check(&root).unwrap().join("\n");
        fs::remove_dir_all(&root).unwrap();
        assert!(
            problems.contains("README.md:1: docs/src/a.md#nope"),
            "{problems}"
        );
        assert!(problems.contains("missing.md: no such file"), "{problems}");
        assert!(problems.contains("outside the book"), "{problems}");
        assert!(
            problems.contains("leads out of the repository"),
            "{problems}"
        );
        assert!(problems.contains("part/b.md: not in"), "{problems}");
        assert!(!problems.contains("#title"), "{problems}");
    }
}
