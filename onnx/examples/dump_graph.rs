use tract_onnx::prelude::*;
fn main() -> TractResult<()> {
    let path = std::env::args().nth(1).unwrap();
    let latent: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let model = tract_onnx::onnx()
        .model_for_path(&path)?
        .with_input_fact(0, f32::fact([1, latent]).into())?
        .into_typed()?
        .into_decluttered()?;
    for id in model.eval_order()? {
        let node = model.node(id);
        println!(
            "{id:3} {:40} {:12} {:?} inputs={:?} out={:?}",
            node.name,
            node.op.name(),
            node.op,
            node.inputs,
            node.outputs.iter().map(|o| &o.fact).collect::<Vec<_>>()
        );
    }
    println!("outputs {:?}", model.output_outlets()?);
    Ok(())
}
