//! Process helpers every task uses: running commands, installing packages and targets, Python environments.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::quiet;

/// Reads a JSON file that a command of ours wrote.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

pub(crate) fn step(title: &str) {
    eprintln!("\n==> {title}");
}

pub(crate) fn run(mut command: impl std::borrow::BorrowMut<Command>) -> Result<()> {
    let command = command.borrow_mut();
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `apt-get install` with sudo when not root, one quiet step (see [`quiet`]).
pub(crate) fn apt_install(root: &Path, packages: &[&str]) -> Result<()> {
    let prefix: Vec<&str> = if is_root() {
        vec![]
    } else if have("sudo") {
        vec!["sudo"]
    } else {
        bail!(
            "{} missing and this user cannot install packages: run `apt-get install {}` as root",
            packages.join(", "),
            packages.join(" ")
        );
    };
    let apt = |what: &str, args: &[&str]| {
        let mut all: Vec<&str> = prefix.clone();
        all.push("apt-get");
        all.extend_from_slice(args);
        let mut command = Command::new(all[0]);
        command
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive");
        quiet::run(root, what, &mut command)
    };
    apt("apt-get update", &["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt(
        &format!("installing {} (apt)", packages.join(", ")),
        &install,
    )
}

/// Adds the rustup target `target` when it is not installed.
pub(crate) fn rustup_target(root: &Path, target: &str) -> Result<()> {
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup")?;
    if !String::from_utf8_lossy(&targets.stdout).contains(target) {
        quiet::run(
            root,
            &format!("installing the {target} target (rustup)"),
            Command::new("rustup").args(["target", "add", target]),
        )?;
    }
    Ok(())
}

pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args);
    command
}

pub(crate) fn mcugan(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(root.join("target/release/mcugan"));
    command.args(args);
    command
}

/// A Python virtual environment `name` under the repository with `packages` installed from
/// PyPI (made on first use, completed when an install was cut short or the list changed);
/// returns its interpreter.
pub(crate) fn python_venv(
    root: &Path,
    name: &str,
    purpose: &str,
    packages: &[&str],
) -> Result<PathBuf> {
    let venv = root.join(name);
    let python = venv.join("bin/python");
    let marker = venv.join("mcugan-packages.txt");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        step(&format!("installing {purpose} from PyPI into {name}"));
        if !python.is_file() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages))?;
        std::fs::write(&marker, wanted)?;
    }
    Ok(python)
}
