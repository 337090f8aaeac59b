//! The decoder of the image record stream the firmware writes over semihosting: arbitrary bytes
//! must give records or an error, never a panic or a read past the end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcugan_shared::stream::RecordReader;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(reader) = RecordReader::new(bytes) {
        for record in reader.take(1 << 16) {
            if record.is_err() {
                break;
            }
        }
    }
});
