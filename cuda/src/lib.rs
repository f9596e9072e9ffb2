//! ferrolm-cuda: GPU kernels for ferrolm.
//!
//! Kernels are `.cu` sources (and the `.cuh` headers they share) embedded in the binary and
//! compiled at run time by NVRTC; the CUDA driver and NVRTC are loaded dynamically through
//! cudarc, so this crate builds on a machine with no CUDA at all. Every entry point checks
//! that the libraries it needs are present before touching them and returns
//! [`ferrolm_core::Error::Device`] otherwise. Kernels run on a stream the caller owns (torch's
//! current stream), given as a raw handle.
//!
//! Modules: [`kernels`] (the embedded sources), [`nvrtc`] (compiling them), [`runtime`] (the
//! driver, contexts and module cache), `launch` (queuing a kernel on the caller's stream), and
//! one module of launchers per kernel family: [`quantize`] and [`divprune`].
#![deny(missing_docs)]

pub mod divprune;
pub mod kernels;
mod launch;
pub mod nvrtc;
pub mod quantize;
pub mod runtime;

pub use kernels::{kernel_sources, KernelHeader, KernelSource};
pub use launch::Launch;
pub use nvrtc::{
    arch_for_device, compile, compile_all, default_arch, nvrtc_available, nvrtc_version,
    supported_archs, CompiledKernel, MIN_ARCH,
};
pub use runtime::{device_count, driver_available, driver_version};
