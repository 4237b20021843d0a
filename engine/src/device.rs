//! Which device the engine computes on, and how it describes the device and its kernels
//! (for `/v1/health`, `/v1/models` and `souffleur model info`).
//!
//! A build with the `cuda` feature computes on the first NVIDIA GPU when the driver
//! reports one, and on the CPU otherwise; the environment variable `SOUFFLEUR_DEVICE`
//! (`cpu`, `cuda` or `cuda:N`) overrides the choice. A build without the feature always
//! computes on the CPU and refuses a request for CUDA by name.

use candle_core::Device;

use crate::error::{EngineError, Result};
use crate::model::quant_matmul::Kernel;

/// The environment variable that names the device.
pub const DEVICE_VAR: &str = "SOUFFLEUR_DEVICE";

/// The device models are loaded on: `SOUFFLEUR_DEVICE` if set, else the first GPU of
/// a CUDA build when one is present, else the CPU.
pub fn choose() -> Result<Device> {
    choose_named(std::env::var(DEVICE_VAR).ok().as_deref())
}

/// The device named `wanted` (`cpu`, `cuda`, `cuda:N`), or the default without a name.
pub fn choose_named(wanted: Option<&str>) -> Result<Device> {
    match wanted.map(str::trim) {
        None | Some("") => Ok(default_device()),
        Some("cpu") => Ok(Device::Cpu),
        Some(name) => {
            let ordinal = match name {
                "cuda" => 0,
                other => other
                    .strip_prefix("cuda:")
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        EngineError::InvalidRequest(format!(
                            "{DEVICE_VAR}={other}: expected `cpu`, `cuda` or `cuda:N`"
                        ))
                    })?,
            };
            cuda_device(ordinal)
        }
    }
}

#[cfg(feature = "cuda")]
fn default_device() -> Device {
    if kernels::cuda::device_present() {
        match Device::new_cuda(0) {
            Ok(d) => return d,
            Err(e) => tracing::warn!("CUDA device 0 unusable, computing on the CPU: {e}"),
        }
    }
    Device::Cpu
}

#[cfg(not(feature = "cuda"))]
fn default_device() -> Device {
    Device::Cpu
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    if !kernels::cuda::device_present() {
        return Err(EngineError::InvalidRequest(format!(
            "{DEVICE_VAR} asks for cuda:{ordinal}, but the CUDA driver reports no device"
        )));
    }
    Ok(Device::new_cuda(ordinal)?)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Err(EngineError::InvalidRequest(format!(
        "{DEVICE_VAR} asks for cuda:{ordinal}, but this build has no CUDA support \
         (build with `--features cuda`: scripts/cuda-build.sh)"
    )))
}

/// What a model computes on: the device and the kernels of its hot paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// `cpu`, or `cuda:N <name> (<PTX arch>)`.
    pub device: String,
    /// The kernels in use, e.g. `quantised products: avx2` or `gemv_q4k[1..=8 rows]`.
    pub kernels: Vec<String>,
}

/// Describes `device` for health and info output.
pub fn report(device: &Device) -> DeviceReport {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => crate::model::cuda::report(dev),
        _ if !device.is_cpu() => DeviceReport {
            device: format!("{device:?}"),
            kernels: vec!["candle".into()],
        },
        _ => {
            let kernel = match Kernel::detect() {
                Kernel::Scalar => "scalar",
                Kernel::Avx2 => "avx2",
                Kernel::Avx512Vnni => "avx512-vnni",
            };
            DeviceReport {
                device: "cpu".into(),
                kernels: vec![
                    format!("quantised products: {kernel}"),
                    "attention: engine (exact per position)".into(),
                ],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_choose_a_device_or_are_refused_clearly() {
        assert!(choose_named(Some("cpu")).expect("cpu").is_cpu());
        let err = choose_named(Some("gpu")).expect_err("unknown name");
        assert!(
            err.to_string().contains("`cpu`, `cuda` or `cuda:N`"),
            "{err}"
        );
        let err = choose_named(Some("cuda:x")).expect_err("bad ordinal");
        assert!(err.to_string().contains("cuda:x"), "{err}");
        #[cfg(not(feature = "cuda"))]
        {
            assert!(choose_named(None).expect("default").is_cpu());
            assert!(choose_named(Some("")).expect("empty").is_cpu());
            let err = choose_named(Some("cuda:1")).expect_err("no CUDA in this build");
            assert!(err.to_string().contains("no CUDA support"), "{err}");
        }
    }

    #[test]
    fn the_cpu_report_names_the_kernels_in_use() {
        let r = report(&Device::Cpu);
        assert_eq!(r.device, "cpu");
        let products = &r.kernels[0];
        assert!(products.starts_with("quantised products: "), "{products}");
        let name = match Kernel::detect() {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Vnni => "avx512-vnni",
        };
        assert!(products.ends_with(name), "{products}");
    }
}
