//! The resize of the digits to dcgan.py's 32x32 against Pillow's own output
//! (`bench/resize_fixture.py` wrote the fixture with Pillow 13.0.0).

use mcugan_model_tools::resize::resize_bilinear;

fn patterns() -> Vec<Vec<u8>> {
    let ramp = (0..28 * 28)
        .map(|i| ((i % 28 * 9 + i / 28 * 5) % 256) as u8)
        .collect();
    let noise = (0..28 * 28u64)
        .map(|i| (((i * 2_654_435_761) >> 7) % 256) as u8)
        .collect();
    let disc = (0..28 * 28)
        .map(|i| {
            let (x, y) = ((i % 28) as f64 - 13.5, (i / 28) as f64 - 13.5);
            if x * x + y * y < 60.0 {
                255
            } else {
                0
            }
        })
        .collect();
    vec![ramp, noise, disc]
}

#[test]
fn the_resize_matches_pillow_to_the_byte() {
    let expected = include_bytes!("fixtures/pillow-resize-28-to-32.bin");
    for (i, pattern) in patterns().iter().enumerate() {
        let ours = resize_bilinear(pattern, 28, 28, 32, 32);
        let theirs = &expected[i * 1024..(i + 1) * 1024];
        let differing = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "pattern {i}: {differing} of 1024 pixels differ"
        );
    }
}
