//! The quality figures the book states for the shipped digits models, measured again: the
//! shipped classifier's test accuracy, and int8's FID against float's (goal: within 5 %).
//! They need the offline digits (`cargo xtask setup`); `cargo xtask test` requires them.

use candle_core::Device;
use mcugan_e2e::{repo_root, shipped_generator, shipped_model};
use mcugan_model_tools::eval::Evaluator;
use mcugan_model_tools::simulate::simulate;
use mcugan_train::classifier::Classifier;
use mcugan_train::model::fold;
use mcugan_train::run::load_generator;

fn digits() -> Option<mcugan_model_tools::data::Dataset> {
    mcugan_e2e::test_digits()
}

fn classifier() -> Classifier {
    Classifier::load(&repo_root().join("models/mnist-digits/classifier.safetensors")).unwrap()
}

#[test]
fn the_shipped_classifier_reaches_97_percent_on_the_test_digits() {
    let Some(test) = digits() else { return };
    let accuracy = classifier().accuracy(&test).unwrap();
    assert!(accuracy >= 0.97, "test accuracy {accuracy}");
}

#[test]
fn fid_is_calibrated_and_int8_is_within_5_percent_of_float() {
    let Some(test) = digits() else { return };
    let evaluator = Evaluator::new(classifier(), &test.pixels).unwrap();
    let seeds: Vec<u32> = (0..1000).collect();
    let float = fold(&load_generator(&shipped_generator(), &Device::Cpu).unwrap()).unwrap();
    let float_pixels: Vec<u8> = seeds
        .iter()
        .flat_map(|&s| float.draw(s).unwrap().into_iter().map(|g| g.round() as u8))
        .collect();
    let blob = std::fs::read(shipped_model()).unwrap();
    let int8_pixels = simulate(&blob, &seeds).unwrap().concat();
    let float = evaluator.measure("float", &float_pixels).unwrap();
    let int8 = evaluator.measure("int8", &int8_pixels).unwrap();
    let real = evaluator.measure("real", &test.pixels).unwrap();
    let noise: Vec<u8> = (0..1000u64 * 784).map(|i| (i * 7919 % 256) as u8).collect();
    let noise = evaluator.measure("noise", &noise).unwrap();
    assert!(
        real.fid < 1e-6,
        "the test split against itself: {}",
        real.fid
    );
    assert!(
        noise.fid > 10.0 * float.fid,
        "noise {} vs float {}",
        noise.fid,
        float.fid
    );
    assert!(
        (int8.fid - float.fid).abs() <= 0.05 * float.fid,
        "int8 FID {} vs float {}",
        int8.fid,
        float.fid
    );
    assert_eq!(float.classes_covered, 10);
}

/// The demo's training settings (`xtask/src/demo.rs`: `DEMO_RECIPE`, `DEMO_LR`), kept here too
/// because the test crate does not link xtask: change both together.
const DEMO_RECIPE: &str = "small-data";
const DEMO_LR: f64 = 0.0004;

/// The demo's recipe must keep learning fast: 50 of its epochs (a test-sized share of the
/// demo's 100) reach FID below 200 with at least 9 of the 10 digits. Measured over seeds 0–4
/// (the book's Recipes chapter): 81.6–166.1 at epoch 50, all ten digits on every seed (seed 0,
/// this test's: 116.9); the same recipe at the reference's learning rate 0.0002 stood at 257–378
/// after 50 epochs (5 runs; seed 0: 7 of 10 digits). A GAN's float path can differ from machine
/// to machine, so the bound leaves room for another trajectory: at 30 epochs, where this test
/// stood before, seed 0 measured 129.5 in an earlier session and 173.8 with 9/10 digits here.
#[test]
fn the_demo_recipe_draws_the_digits_after_50_epochs() {
    let Some(test) = digits() else { return };
    let work = tempfile::tempdir().unwrap();
    let mut config = mcugan_train::run::TrainConfig::reference(
        repo_root().join("data/mnist-digits"),
        work.path().join("run"),
        50,
    );
    config.recipe = mcugan_train::recipe::Recipe::by_name(DEMO_RECIPE).unwrap();
    config.adam.lr = DEMO_LR;
    config.sample_interval = 0;
    config.progress = false;
    config.engine = mcugan_train::engine::Engine::Fused { threads: 2 };
    mcugan_train::run::train(&config).unwrap();
    let generator =
        load_generator(&work.path().join("run/generator.safetensors"), &Device::Cpu).unwrap();
    let float = fold(&generator).unwrap();
    let pixels: Vec<u8> = (0..1000u32)
        .flat_map(|s| float.draw(s).unwrap().into_iter().map(|g| g.round() as u8))
        .collect();
    let evaluator = Evaluator::new(classifier(), &test.pixels).unwrap();
    let metrics = evaluator
        .measure("demo recipe, 50 epochs", &pixels)
        .unwrap();
    eprintln!(
        "demo recipe, 50 epochs, seed 0: FID {:.2}, {}/10 classes",
        metrics.fid, metrics.classes_covered
    );
    assert!(
        metrics.fid < 200.0 && metrics.classes_covered >= 9,
        "FID {} with {}/10 classes (bound: below 200, at least 9)",
        metrics.fid,
        metrics.classes_covered
    );
}
