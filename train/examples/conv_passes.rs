//! Times the phased convolution's three passes for dcgan.py's layers at batch 64:
//! `cargo run --release -p mcugan-train --example conv_passes -- [threads]`.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use mcugan_float_model::conv::Conv2d as Geometry;
use mcugan_train::model::conv::PhasedGeometry;

fn main() -> anyhow::Result<()> {
    let threads: usize = std::env::args().nth(1).map_or(Ok(2), |t| t.parse())?;
    mcugan_train::cpu::set_conv_threads(threads);
    let device = Device::Cpu;
    for (cin, cout, side, up) in [
        (128, 128, 8, 2),
        (128, 64, 16, 2),
        (64, 1, 32, 1),
        (16, 32, 16, 1),
    ] {
        let stride = if (cin, cout) == (16, 32) { 2 } else { 1 };
        let out = side * up / stride;
        let g = Geometry {
            transposed: false,
            in_channels: cin,
            out_channels: cout,
            input: [side, side],
            output: [out, out],
            kernel: [3, 3],
            stride: [stride, stride],
            padding: [1, 1],
            upsample: up,
        };
        let phased = Arc::new(PhasedGeometry::new(g)?);
        let x = Tensor::randn(0f32, 1., (64, cin, side, side), &device)?;
        let w = Tensor::randn(0f32, 1., (cout, cin, 3, 3), &device)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.flatten_all()?.to_vec1::<f32>()?;
        let gy = vec![1f32; 64 * cout * out * out];
        let time = |f: &dyn Fn()| {
            f();
            let t = Instant::now();
            for _ in 0..5 {
                f();
            }
            t.elapsed().as_secs_f64() / 5.0
        };
        let fwd = time(&|| {
            mcugan_train::cpu::run_conv(|par| phased.forward(&xs, &ws, 64, par));
        });
        let gin = time(&|| {
            mcugan_train::cpu::run_conv(|par| phased.input_gradient(&gy, &ws, 64, par));
        });
        let gw = time(&|| {
            mcugan_train::cpu::run_conv(|par| phased.weight_gradient(&xs, &gy, 64, par));
        });
        let macs =
            64.0 * cout as f64 * (out * out) as f64 * cin as f64 * if up == 2 { 4.0 } else { 9.0 };
        println!(
            "{cin}->{cout} side {side} up {up} stride {stride}: forward {:.1} ms ({:.1} GMAC/s), input grad {:.1} ms, weight grad {:.1} ms",
            fwd * 1e3,
            macs / fwd / 1e9,
            gin * 1e3,
            gw * 1e3
        );
    }
    Ok(())
}
