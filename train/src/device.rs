//! Choosing where tensors live from the command line's `--device`.

use candle_core::Device;

/// Errors in a `--device` argument.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device '{0}' (use cpu, cuda or cuda:N)")]
    Unknown(String),
    /// A CUDA device was asked of a build without the `cuda` feature.
    #[error(
        "this mcugan was built without CUDA; rebuild with `cargo build --release --features cuda` \
         (see docs/src/training/gpu.md) to use '{0}'"
    )]
    NotCompiled(String),
    /// The CUDA device could not be opened.
    #[error("cannot open {name}: {source}")]
    Open {
        /// The device asked for.
        name: String,
        /// candle's error.
        source: candle_core::Error,
    },
}

/// `cpu`, `cuda` (the first GPU) or `cuda:N`.
pub fn parse(text: &str) -> Result<Device, DeviceError> {
    let ordinal = match text {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => return Err(DeviceError::Unknown(text.to_string())),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(DeviceError::NotCompiled(text.to_string()));
    }
    Device::new_cuda(ordinal).map_err(|source| DeviceError::Open {
        name: text.to_string(),
        source,
    })
}

/// The device in words, with the CPU thread count.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => format!(
            "cpu ({} GEMM thread{} of {} cores)",
            crate::cpu::gemm_threads(),
            if crate::cpu::gemm_threads() == 1 {
                ""
            } else {
                "s"
            },
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_nonsense() {
        assert!(parse("cpu").is_ok_and(|d| d.is_cpu()));
        assert!(matches!(parse("gpu"), Err(DeviceError::Unknown(_))));
        assert!(matches!(parse("cuda:x"), Err(DeviceError::Unknown(_))));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let message = parse("cuda").unwrap_err().to_string();
        assert!(message.contains("--features cuda"), "{message}");
    }
}
