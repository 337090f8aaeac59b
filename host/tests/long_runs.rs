//! Long runs that users can trust, tested on the real `mcugan` binary: Ctrl-C saves a
//! checkpoint and exits cleanly, a `kill -9` leaves a checkpoint that resumes, a resumed run
//! ends exactly where an uninterrupted one does, and a loss that is not finite stops the run
//! with a clear message and leaves the last good checkpoint as it was.

mod common;

use common::assert_success;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

const EPOCHS: &str = "12";

fn mcugan() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcugan"));
    command.env("RAYON_NUM_THREADS", "1");
    command
}

fn train_args(data: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--data",
        &data.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--epochs",
        EPOCHS,
        "--batch-size",
        "16",
        "--sample-interval",
        "0",
        "--seed",
        "3",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String]) -> Output {
    mcugan().args(args).output().unwrap()
}

fn resume(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train".to_string(),
        "--resume".into(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
        "--sample-interval".into(),
        "0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&args)
}

/// Every tensor of a safetensors file.
fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.len(), b.len());
    let mut differing = Vec::new();
    for (name, t) in &a {
        let u = &b[name];
        assert_eq!(t.dims(), u.dims(), "{name}");
        if t.elem_count() == 0 {
            continue;
        }
        let diff = (t.to_dtype(candle_core::DType::F64).unwrap()
            - u.to_dtype(candle_core::DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
        if diff != 0.0 {
            differing.push(format!("{name} by {diff}"));
        }
    }
    differing.sort();
    assert!(differing.is_empty(), "tensors differ: {differing:?}");
}

/// Starts a run and waits until its first checkpoint exists.
fn start_until_checkpoint(args: &[String], out: &Path) -> Child {
    let mut child = mcugan()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = out.join("checkpoint.safetensors");
    let started = Instant::now();
    while !checkpoint.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before its first checkpoint");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

struct Runs {
    _work: tempfile::TempDir,
    data: PathBuf,
    reference: PathBuf,
    root: PathBuf,
}

/// The synthetic data and one uninterrupted run to compare against.
fn uninterrupted() -> Runs {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 480);
    let reference = work.path().join("uninterrupted");
    let output = run(&train_args(&data, &reference));
    assert_success(&output);
    Runs {
        root: work.path().to_path_buf(),
        _work: work,
        data,
        reference,
    }
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_the_resumed_run_matches_an_uninterrupted_one() {
    let runs = uninterrupted();
    let out = runs.root.join("interrupted");
    let child = start_until_checkpoint(&train_args(&runs.data, &out), &out);
    // Ctrl-C in a terminal sends SIGINT.
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("checkpoint saved") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!out.join("generator.safetensors").exists());

    let output = resume(&out, &[]);
    assert_success(&output);
    assert_same_tensors(
        &runs.reference.join("generator.safetensors"),
        &out.join("generator.safetensors"),
    );
    assert_same_tensors(
        &runs.reference.join("checkpoint.safetensors"),
        &out.join("checkpoint.safetensors"),
    );
    assert_eq!(
        std::fs::read_to_string(runs.reference.join("losses.csv")).unwrap(),
        std::fs::read_to_string(out.join("losses.csv")).unwrap()
    );

    // kill -9 at an arbitrary moment: the checkpoint on disk is whole, and resumes to the
    // same end.
    let out = runs.root.join("killed");
    let mut child = start_until_checkpoint(&train_args(&runs.data, &out), &out);
    std::thread::sleep(Duration::from_millis(37));
    child.kill().unwrap();
    child.wait().unwrap();
    let output = resume(&out, &[]);
    assert_success(&output);
    assert_same_tensors(
        &runs.reference.join("generator.safetensors"),
        &out.join("generator.safetensors"),
    );
    assert_eq!(
        std::fs::read_to_string(runs.reference.join("losses.csv")).unwrap(),
        std::fs::read_to_string(out.join("losses.csv")).unwrap()
    );
}

#[test]
fn a_loss_that_is_not_finite_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 96);
    let out = work.path().join("run");
    let mut args = train_args(&data, &out);
    let at = args.iter().position(|a| a == "--epochs").unwrap();
    args[at + 1] = "1".into();
    assert!(run(&args).status.success());
    let checkpoint = out.join("checkpoint.safetensors");
    let good = std::fs::read(&checkpoint).unwrap();

    // An absurd learning rate blows the weights up within a step or two.
    let output = resume(&out, &["--epochs", "3", "--lr", "1e30"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("not finite") && stderr.contains("last good checkpoint"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&checkpoint).unwrap(),
        good,
        "the checkpoint was overwritten"
    );

    // The good checkpoint still resumes.
    let output = resume(&out, &["--epochs", "2"]);
    assert_success(&output);
}

#[test]
fn resume_refuses_what_it_cannot_continue() {
    let work = tempfile::tempdir().unwrap();
    let output = resume(work.path(), &[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("checkpoint.safetensors"));
    let not_a_checkpoint = work.path().join("checkpoint.safetensors");
    std::fs::write(&not_a_checkpoint, b"\x08\0\0\0\0\0\0\0{}      ").unwrap();
    let output = resume(work.path(), &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_kept_generator_holds_the_weights_of_its_own_epoch() {
    // Checkpoints are not written after every epoch; the generators kept by --save-every must
    // still come from the live weights of their epoch, whichever engine trains.
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 96);
    for engine in ["fused", "candle"] {
        let out = work.path().join(engine);
        let mut args = train_args(&data, &out);
        let at = args.iter().position(|a| a == "--epochs").unwrap();
        args[at + 1] = "3".into();
        args.extend(["--save-every", "1", "--engine", engine].map(String::from));
        assert_success(&run(&args));
        let kept =
            |epoch: usize| tensors(&out.join(format!("generators/epoch-{epoch}.safetensors")));
        let (first, second) = (kept(1), kept(2));
        let name = "model.0.weight";
        let change = (&first[name] - &second[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            change > 0.0,
            "{engine}: epochs 1 and 2 kept the same {name}"
        );
        assert_same_tensors(
            &out.join("generators/epoch-3.safetensors"),
            &out.join("generator.safetensors"),
        );
    }
}

#[test]
fn sigterm_and_sighup_save_a_checkpoint_as_ctrl_c_does() {
    let runs = uninterrupted();
    // `timeout`, systemd, schedulers and `docker stop` send SIGTERM; a closed terminal SIGHUP.
    for (name, signal) in [("sigterm", libc::SIGTERM), ("sighup", libc::SIGHUP)] {
        let out = runs.root.join(name);
        let child = start_until_checkpoint(&train_args(&runs.data, &out), &out);
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "{name}: {stderr}");
        assert!(
            stderr.contains("interrupted") && stderr.contains("checkpoint saved"),
            "{name}: {stderr}"
        );
        let output = resume(&out, &[]);
        assert_success(&output);
        assert_same_tensors(
            &runs.reference.join("generator.safetensors"),
            &out.join("generator.safetensors"),
        );
    }
}

#[test]
fn a_second_run_on_the_same_folder_is_refused_while_the_first_writes() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    common::bars(&data, 480);
    let out = work.path().join("run");
    let mut args = train_args(&data, &out);
    let epochs = args.iter().position(|a| a == "--epochs").unwrap() + 1;
    args[epochs] = "1000".into();
    let first = start_until_checkpoint(&args, &out);
    for second in [run(&args), resume(&out, &[])] {
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(!second.status.success(), "{stderr}");
        assert!(
            stderr.contains("in use by another mcugan train")
                && stderr.contains(&format!("process {}", first.id())),
            "{stderr}"
        );
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let output = first.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    // Free again once the first run has ended: the lock goes with its process.
    let mut again = train_args(&data, &out);
    again.push("--force".into());
    assert_success(&run(&again));
}
