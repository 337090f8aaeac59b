//! Prints tract's typed, decluttered graph of an ONNX generator, node by node: what the
//! importer walks. For looking at a graph the importer refuses.
//!
//! `cargo run -p mcugan-onnx --example dump_graph -- MODEL.onnx LATENT_DIM`

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, latent) = match args.as_slice() {
        [path, latent] => (path, latent.parse::<usize>()?),
        _ => return Err(TractError::msg("usage: dump_graph MODEL.onnx LATENT_DIM")),
    };
    let model = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact([1, latent]).into())?
        .into_typed()?
        .into_decluttered()?;
    for id in model.eval_order()? {
        let node = model.node(id);
        let facts: Vec<String> = node
            .outputs
            .iter()
            .map(|o| format!("{:?}", o.fact))
            .collect();
        println!(
            "{id:3} {:40} {:12} inputs {:?} -> {}",
            node.name,
            node.op.name(),
            node.inputs,
            facts.join(", ")
        );
    }
    println!("outputs {:?}", model.output_outlets()?);
    Ok(())
}
