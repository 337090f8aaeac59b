//! The shipped class-conditional digits model: the chip draws the host's bytes for any
//! `(seed, class)` and along latent walks, the blob is what the quantizer makes of the shipped
//! generator, and it draws the class it is asked for (measured with the shipped classifier).

use candle_core::Device;
use mcugan_device_tools::firmware::{run_qemu, run_qemu_requests, run_qemu_walk, QemuOptions};
use mcugan_e2e::{
    build_firmware, build_firmware_with_features, repo_root, shipped_conditional_generator,
    shipped_conditional_model, shipped_model, Kernels,
};
use mcugan_model_tools::eval::{class_accuracy, Evaluator};
use mcugan_model_tools::quantize::{quantize, FloatGenerator, QuantizeOptions};
use mcugan_model_tools::simulate::{simulate, simulate_requests, simulate_walk};
use mcugan_shared::{ImageRequest, Model, Walk};
use mcugan_train::classifier::Classifier;
use mcugan_train::model::fold;
use mcugan_train::run::load_generator;

fn qemu() -> QemuOptions {
    QemuOptions::with_timeout(120)
}

fn float() -> FloatGenerator {
    fold(&load_generator(&shipped_conditional_generator(), &Device::Cpu).unwrap()).unwrap()
}

#[test]
fn the_shipped_conditional_blob_is_what_the_quantizer_makes_of_its_generator() {
    let shipped = std::fs::read(shipped_conditional_model()).unwrap();
    let model = Model::parse(&shipped).unwrap();
    assert_eq!(model.classes(), Some(10));
    assert_eq!((model.latent_dim(), model.input_width()), (100, 110));
    let options = QuantizeOptions {
        name: "mnist-digits-conditional".into(),
        ..QuantizeOptions::default()
    };
    let quantized = quantize(&float(), &options).unwrap();
    assert_eq!(quantized.class_codes_clipped, 0);
    assert!(
        quantized.blob == shipped,
        "re-quantizing models/mnist-digits-conditional/generator.safetensors gives another blob"
    );
}

#[test]
fn the_chip_draws_the_hosts_bytes_for_seed_and_class_pairs_and_walks() {
    let work = tempfile::tempdir().unwrap();
    let blob = std::fs::read(shipped_conditional_model()).unwrap();
    let elf = build_firmware(&shipped_conditional_model(), &work.path().join("fw.elf")).unwrap();

    // Every class, small and extreme seeds, and seeds in their default class.
    let mut requests: Vec<(u32, Option<u16>)> = (0..10).map(|c| (c * 7, Some(c as u16))).collect();
    requests.extend([(u32::MAX, Some(9)), (u32::MAX - 1, Some(0)), (12, Some(3))]);
    requests.extend([(40, None), (41, None), (42, None)]);
    let run = run_qemu_requests(&elf, &requests, &qemu()).unwrap();
    assert!(run.succeeded(), "firmware failed:\n{}", run.log.join("\n"));
    assert_eq!(run.stream_error, None);
    let asked: Vec<ImageRequest> = requests
        .iter()
        .map(|&(seed, class)| match class {
            Some(class) => ImageRequest::class(seed, class),
            None => ImageRequest::default_for(seed, Some(10)),
        })
        .collect();
    let expected = simulate_requests(&blob, &asked).unwrap();
    assert_eq!(run.images.len(), asked.len());
    for ((drawn, want), request) in run.images.iter().zip(&expected).zip(&asked) {
        assert_eq!((drawn.seed, drawn.class), (request.seed, request.class));
        assert!(
            drawn.pixels == *want,
            "{request:?}: the chip differs from the host"
        );
    }
    // The class changes the image: seed 0 in class 0 and in class 3 (simulated) differ.
    let other = simulate_requests(&blob, &[ImageRequest::class(0, 3)]).unwrap();
    assert_ne!(run.images[0].pixels, other[0]);

    // The default build has no walk mode (it costs flash) and says how to get it.
    let no_walk = run_qemu_walk(
        &elf,
        &Walk {
            from: ImageRequest::seed(1),
            to: ImageRequest::seed(2),
            frames: 3,
        },
        &qemu(),
    )
    .unwrap();
    assert!(!no_walk.succeeded());
    assert!(
        no_walk.log.iter().any(|l| l.contains("--features walk")),
        "{}",
        no_walk.log.join("\n")
    );

    // Walks (the `walk` build): between two seeds in one class, between two classes of one
    // seed, and (no class given) between two seeds' default classes — the chip's frames are
    // the host's.
    let elf = build_firmware_with_features(
        &shipped_conditional_model(),
        &work.path().join("fw-walk.elf"),
        Kernels::Dsp,
        &["walk"],
    )
    .unwrap();
    let walks = [
        Walk {
            from: ImageRequest::class(3, 7),
            to: ImageRequest::class(8, 7),
            frames: 9,
        },
        Walk {
            from: ImageRequest::class(5, 0),
            to: ImageRequest::class(5, 9),
            frames: 6,
        },
        Walk {
            from: ImageRequest::seed(3),
            to: ImageRequest::seed(8),
            frames: 5,
        },
    ];
    for walk in walks {
        let run = run_qemu_walk(&elf, &walk, &qemu()).unwrap();
        assert!(run.succeeded(), "{walk:?}:\n{}", run.log.join("\n"));
        let resolved = Walk {
            from: ImageRequest::default_for(walk.from.seed, Some(10)),
            to: ImageRequest::default_for(walk.to.seed, Some(10)),
            frames: walk.frames,
        };
        let resolved = if walk.from.class.is_some() {
            walk
        } else {
            resolved
        };
        let expected = simulate_walk(&blob, &resolved).unwrap();
        let frames: Vec<Vec<u8>> = run.images.iter().map(|i| i.pixels.clone()).collect();
        assert!(frames == expected, "{walk:?}: the chip's frames differ");
        // A walk starts and ends on the two requests' own images.
        let ends = simulate_requests(&blob, &[resolved.from, resolved.to]).unwrap();
        assert_eq!(frames[0], ends[0]);
        assert_eq!(frames[frames.len() - 1], ends[1]);
        assert!(
            frames.windows(2).any(|w| w[0] != w[1]),
            "{walk:?} does not move"
        );
    }
}

#[test]
fn an_unconditional_firmware_refuses_a_class() {
    let work = tempfile::tempdir().unwrap();
    let elf = build_firmware(&shipped_model(), &work.path().join("fw.elf")).unwrap();
    let run = run_qemu_requests(&elf, &[(1, Some(3))], &qemu()).unwrap();
    assert!(!run.succeeded());
    assert!(
        run.log
            .iter()
            .any(|l| l.contains("cannot draw: the model is unconditional: it draws no class")),
        "{}",
        run.log.join("\n")
    );
    // Without a class it draws as before.
    let run = run_qemu(&elf, &[1], &qemu()).unwrap();
    assert!(run.succeeded());
    let blob = std::fs::read(shipped_model()).unwrap();
    assert_eq!(run.images[0].pixels, simulate(&blob, &[1]).unwrap()[0]);
}

fn digits() -> Option<mcugan_model_tools::data::Dataset> {
    mcugan_e2e::test_digits()
}

#[test]
fn the_shipped_conditional_model_draws_the_asked_digit_95_percent_of_the_time() {
    let Some(test) = digits() else { return };
    let classifier =
        Classifier::load(&repo_root().join("models/mnist-digits/classifier.safetensors")).unwrap();
    let seeds: Vec<u32> = (0..1000).collect();
    let asked: Vec<u16> = seeds.iter().map(|&s| (s % 10) as u16).collect();
    let float = float();
    let float_pixels: Vec<u8> = seeds
        .iter()
        .flat_map(|&s| float.draw(s).unwrap().into_iter().map(|g| g.round() as u8))
        .collect();
    let blob = std::fs::read(shipped_conditional_model()).unwrap();
    let int8_pixels = simulate(&blob, &seeds).unwrap().concat();

    let accuracy = |pixels: &[u8]| {
        let predicted = classifier.predict(pixels).unwrap();
        class_accuracy(&predicted, &asked, 10)
    };
    let (float_accuracy, int8_accuracy) = (accuracy(&float_pixels), accuracy(&int8_pixels));
    assert!(
        float_accuracy.overall >= 0.95 && int8_accuracy.overall >= 0.95,
        "class accuracy: float {:.3}, int8 {:.3}",
        float_accuracy.overall,
        int8_accuracy.overall
    );
    assert!(
        (float_accuracy.overall - int8_accuracy.overall).abs() <= 0.01,
        "int8 {:.3} is more than a point from float {:.3}",
        int8_accuracy.overall,
        float_accuracy.overall
    );
    assert!(
        int8_accuracy.per_class.iter().all(|&a| a >= 0.85),
        "per class: {:?}",
        int8_accuracy.per_class
    );
    // A test that can fail: asking for the wrong classes scores near zero.
    let shifted: Vec<u16> = asked.iter().map(|&c| (c + 1) % 10).collect();
    let predicted = classifier.predict(&int8_pixels).unwrap();
    assert!(class_accuracy(&predicted, &shifted, 10).overall < 0.2);

    // FID no worse than the unconditional shipped model's, on the same 1,000 seeds.
    let evaluator = Evaluator::new(classifier, &test.pixels).unwrap();
    let unconditional_blob = std::fs::read(shipped_model()).unwrap();
    let unconditional = simulate(&unconditional_blob, &seeds).unwrap().concat();
    let fid_conditional = evaluator.measure("conditional", &int8_pixels).unwrap().fid;
    let fid_unconditional = evaluator
        .measure("unconditional", &unconditional)
        .unwrap()
        .fid;
    assert!(
        fid_conditional <= fid_unconditional,
        "FID {fid_conditional:.2} conditional, {fid_unconditional:.2} unconditional"
    );
}
