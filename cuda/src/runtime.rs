//! The CUDA driver: loading it, one context per device, and a per-device cache of compiled
//! kernel modules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaModule};
use ferrolm_core::{Error, Result};

use crate::kernels::KernelSource;
use crate::nvrtc::{arch_for_device, compile};

/// Whether the CUDA driver library (`libcuda`) can be loaded.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen candidate library names; no symbol is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

fn require_driver() -> Result<()> {
    if !driver_available() {
        return Err(Error::Device(
            "the CUDA driver (libcuda.so) was not found: this machine has no NVIDIA driver".into(),
        ));
    }
    cudarc::driver::result::init()
        .map_err(|e| Error::Device(format!("the CUDA driver failed to initialise: {e:?}")))
}

/// The CUDA version the driver supports, as (major, minor).
pub fn driver_version() -> Result<(i32, i32)> {
    require_driver()?;
    let mut v = 0;
    // SAFETY: the driver is loaded and initialised; the out-pointer is valid.
    let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if status != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Device(format!(
            "cuDriverGetVersion failed: {status:?}"
        )));
    }
    Ok((v / 1000, (v % 1000) / 10))
}

/// Number of CUDA devices the driver sees (an error when there is no driver).
pub fn device_count() -> Result<usize> {
    require_driver()?;
    let n = cudarc::driver::result::device::get_count()
        .map_err(|e| Error::Device(format!("cuDeviceGetCount failed: {e:?}")))?;
    Ok(n.max(0) as usize)
}

type ModuleKey = (usize, &'static str);

fn context(device: usize) -> Result<Arc<CudaContext>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<usize, Arc<CudaContext>>>> = OnceLock::new();
    require_driver()?;
    let mut map = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Internal("CUDA context cache poisoned".into()))?;
    if let Some(ctx) = map.get(&device) {
        ctx.bind_to_thread()
            .map_err(|e| Error::Device(format!("cannot bind CUDA device {device}: {e:?}")))?;
        return Ok(ctx.clone());
    }
    let count = device_count()?;
    if device >= count {
        return Err(Error::value(
            "device",
            format!("a CUDA device index below {count}"),
            device,
        ));
    }
    // The primary context: the one torch uses, so pointers from torch tensors are valid in it.
    let ctx = CudaContext::new(device)
        .map_err(|e| Error::Device(format!("cannot open CUDA device {device}: {e:?}")))?;
    map.insert(device, ctx.clone());
    Ok(ctx)
}

/// The primary context of `device` (bound to this thread) and `kernel` compiled for it.
pub(crate) fn module(
    device: usize,
    kernel: &'static KernelSource,
) -> Result<(Arc<CudaContext>, Arc<CudaModule>)> {
    static MODULES: OnceLock<Mutex<HashMap<ModuleKey, Arc<CudaModule>>>> = OnceLock::new();
    let ctx = context(device)?;
    let mut map = MODULES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Internal("CUDA module cache poisoned".into()))?;
    if let Some(m) = map.get(&(device, kernel.name)) {
        return Ok((ctx, m.clone()));
    }
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| Error::Device(format!("cannot query device {device}: {e:?}")))?;
    let arch = arch_for_device(major, minor)
        .map_err(|e| Error::Device(format!("CUDA device {device}: {e}")))?;
    let ptx = compile(kernel, Some(&arch))?;
    let m = ctx.load_module(ptx).map_err(|e| {
        Error::Device(format!(
            "cannot load {}.cu on device {device}: {e:?}",
            kernel.name
        ))
    })?;
    map.insert((device, kernel.name), m.clone());
    Ok((ctx, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_driver_is_an_error_not_a_panic() {
        if !driver_available() {
            assert!(device_count().is_err());
            assert!(matches!(context(0), Err(Error::Device(_))));
        }
    }
}
