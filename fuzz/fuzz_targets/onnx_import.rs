//! The ONNX importer, end to end, on arbitrary bytes: an import or a named error, never a
//! panic that escapes it (tract's are caught inside), an abort or a stack overflow. Seeds: a
//! small file of each fixture kind and the files that crashed tract before mcugan checked
//! for them (fuzz/corpus/onnx_import).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = mcugan_onnx::import_bytes(Path::new("fuzz.onnx"), bytes);
});
