//! Compiling the kernel sources to PTX with NVRTC (no GPU needed).

use std::ffi::{c_char, CString};

use cudarc::nvrtc::{result, sys, Ptx};
use ferrolm_core::{Error, Result};

use crate::kernels::{kernel_sources, KernelSource, HEADERS};

/// Whether the NVRTC shared library can be loaded.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen candidate library names; no symbol is called.
    unsafe { sys::is_culib_present() }
}

fn require_nvrtc() -> Result<()> {
    if nvrtc_available() {
        Ok(())
    } else {
        Err(Error::Device(
            "NVRTC (libnvrtc) was not found: install the `nvidia-cuda-nvrtc` wheel that comes with \
             CUDA builds of torch, or put libnvrtc on LD_LIBRARY_PATH"
                .into(),
        ))
    }
}

/// NVRTC's version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; the out-pointers are valid for the call.
    let status = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    if status != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Device(format!("nvrtcVersion failed: {status:?}")));
    }
    Ok((major, minor))
}

/// The oldest compute capability the kernels support, as `major * 10 + minor`:
/// `quantize_intellect.cu` accumulates with `atomicAdd` on doubles, which needs 6.0.
pub const MIN_ARCH: i32 = 60;

/// The virtual architectures (`major * 10 + minor`, ascending) this NVRTC can compile for.
pub fn supported_archs() -> Result<Vec<i32>> {
    require_nvrtc()?;
    let mut n: std::ffi::c_int = 0;
    // SAFETY: the library is present; the out-pointer is valid for the call.
    let status = unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) };
    if status != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Device(format!(
            "nvrtcGetNumSupportedArchs failed: {status:?}"
        )));
    }
    // NVRTC lists a few dozen; anything else is a broken library, not a size to allocate.
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= 1024)
        .ok_or_else(|| Error::Device(format!("NVRTC reports {n} supported architectures")))?;
    let mut archs: Vec<std::ffi::c_int> = vec![0; n];
    // SAFETY: `archs` holds exactly the number of entries NVRTC just reported.
    let status = unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) };
    if status != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Device(format!(
            "nvrtcGetSupportedArchs failed: {status:?}"
        )));
    }
    archs.sort_unstable();
    Ok(archs)
}

/// The architecture a compile without one targets: the oldest that both this NVRTC supports
/// and the kernels can use (at least [`MIN_ARCH`]). NVRTC's own default is too old for the
/// kernels before CUDA 13 (compute_52 in CUDA 12), and the oldest target keeps the check
/// meaningful for every GPU the kernels run on.
pub fn default_arch() -> Result<String> {
    let archs = supported_archs()?;
    archs
        .iter()
        .find(|&&a| a >= MIN_ARCH)
        .map(|a| format!("compute_{a}"))
        .ok_or_else(|| {
            Error::Device(format!(
                "this NVRTC supports no architecture ferrolm's kernels can use (compute_{MIN_ARCH} \
                 or newer); it supports {archs:?}"
            ))
        })
}

/// The architecture to compile for a device of compute capability `major.minor`: its own when
/// NVRTC knows it, otherwise the newest older one NVRTC knows (the driver compiles that PTX for
/// the device), so a GPU newer than the NVRTC still runs the kernels.
pub fn arch_for_device(major: i32, minor: i32) -> Result<String> {
    let device = major * 10 + minor;
    if device < MIN_ARCH {
        return Err(Error::Device(format!(
            "the GPU has compute capability {major}.{minor}; ferrolm's kernels need {}.{} or newer",
            MIN_ARCH / 10,
            MIN_ARCH % 10
        )));
    }
    let archs = supported_archs()?;
    archs
        .iter()
        .rev()
        .find(|&&a| (MIN_ARCH..=device).contains(&a))
        .map(|a| format!("compute_{a}"))
        .ok_or_else(|| {
            Error::Device(format!(
                "this NVRTC cannot compile for compute capability {major}.{minor}: it supports \
                 {archs:?}; install a CUDA build of torch that supports this GPU"
            ))
        })
}

/// The result of compiling one kernel family.
#[derive(Debug, Clone)]
pub struct CompiledKernel {
    /// Family name.
    pub name: &'static str,
    /// Size of the generated PTX in bytes.
    pub ptx_bytes: usize,
}

fn options(arch: &str) -> Vec<String> {
    // Exact IEEE arithmetic so GPU results match the CPU path bit for bit.
    let mut options: Vec<String> = [
        "--ftz=false",
        "--prec-sqrt=true",
        "--prec-div=true",
        "--fmad=false",
        "--std=c++17",
    ]
    .map(str::to_owned)
    .into();
    options.push(format!("--gpu-architecture={arch}"));
    options
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from nvrtcCreateProgram and is destroyed only here. A failure
        // would leak the program at worst, so its status is ignored.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// Turns NVRTC's NUL-terminated output buffer into text.
fn text(buffer: &[c_char]) -> String {
    let bytes: Vec<u8> = buffer
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn nvrtc_failed(what: &'static str, name: &'static str) -> impl Fn(result::NvrtcError) -> Error {
    move |e| Error::Device(format!("{what} {name}.cu failed: {e:?}"))
}

fn c_string(text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::Internal("a kernel source contains a NUL byte".into()))
}

/// Restores the calling thread's locale when dropped. NVRTC 12 (torch 2.6's) switches the
/// calling thread to the "C" locale with `uselocale` and leaves it there; Python on that thread
/// then reads its preferred encoding as ASCII, so `open()` and `subprocess` text fail on UTF-8.
struct ThreadLocale(#[cfg(target_os = "linux")] libc::locale_t);

impl ThreadLocale {
    fn save() -> Self {
        // SAFETY: uselocale with a null argument only returns the thread's current locale.
        #[cfg(target_os = "linux")]
        return ThreadLocale(unsafe { libc::uselocale(std::ptr::null_mut()) });
        #[cfg(not(target_os = "linux"))]
        ThreadLocale()
    }
}

impl Drop for ThreadLocale {
    fn drop(&mut self) {
        // SAFETY: the handle is the one uselocale returned for this thread (LC_GLOBAL_LOCALE or
        // a locale the thread's owner installed and still owns), so it is valid to reinstall.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::uselocale(self.0);
        }
    }
}

/// Compiles one kernel family to PTX, with every header of [`HEADERS`] available to
/// `#include`. `arch` is e.g. `"compute_90"`; `None` means [`default_arch`].
pub fn compile(kernel: &KernelSource, arch: Option<&str>) -> Result<Ptx> {
    require_nvrtc()?;
    let _locale = ThreadLocale::save();
    let arch = match arch {
        Some(arch) => arch.to_owned(),
        None => default_arch()?,
    };
    // Declared before `program`, so they outlive it: NVRTC may keep pointers into them.
    let source = c_string(kernel.source)?;
    let name = c_string(&format!("{}.cu", kernel.name))?;
    let header_sources = HEADERS
        .iter()
        .map(|h| c_string(h.source))
        .collect::<Result<Vec<_>>>()?;
    let header_names = HEADERS
        .iter()
        .map(|h| c_string(h.name))
        .collect::<Result<Vec<_>>>()?;
    let header_sources: Vec<*const c_char> = header_sources.iter().map(|s| s.as_ptr()).collect();
    let header_names: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();
    let mut handle = std::ptr::null_mut();
    // SAFETY: NVRTC is present; every pointer is a NUL-terminated string alive for this whole
    // function, and both header arrays hold exactly HEADERS.len() entries.
    unsafe {
        sys::nvrtcCreateProgram(
            &mut handle,
            source.as_ptr(),
            name.as_ptr(),
            HEADERS.len() as i32,
            header_sources.as_ptr(),
            header_names.as_ptr(),
        )
    }
    .result()
    .map_err(nvrtc_failed("creating the NVRTC program for", kernel.name))?;
    let program = Program(handle);
    // SAFETY: `program` holds a live program (destroyed only when it drops, after these calls).
    unsafe {
        if result::compile_program(program.0, &options(&arch)).is_err() {
            let log = result::get_program_log(program.0)
                .map_err(nvrtc_failed("reading the NVRTC log of", kernel.name))?;
            return Err(Error::Device(format!(
                "NVRTC failed to compile {}.cu: {}",
                kernel.name,
                text(&log)
            )));
        }
        let ptx =
            result::get_ptx(program.0).map_err(nvrtc_failed("reading the PTX of", kernel.name))?;
        Ok(Ptx::from_src(text(&ptx)))
    }
}

/// Compiles every kernel family (for `arch`, `None` meaning [`default_arch`]); no GPU is needed.
pub fn compile_all(arch: Option<&str>) -> Result<Vec<CompiledKernel>> {
    let arch = match arch {
        Some(arch) => arch.to_owned(),
        None => default_arch()?,
    };
    let arch = Some(arch.as_str());
    kernel_sources()
        .iter()
        .map(|k| {
            let ptx = compile(k, arch)?;
            Ok(CompiledKernel {
                name: k.name,
                ptx_bytes: ptx.to_src().len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_nvrtc_is_an_error_not_a_panic() {
        if !nvrtc_available() {
            let e = compile_all(None).unwrap_err();
            assert!(e.to_string().contains("NVRTC"));
        }
    }

    #[test]
    fn every_kernel_compiles_when_nvrtc_is_present() {
        if !nvrtc_available() {
            eprintln!("skipped: libnvrtc not found on the library path");
            return;
        }
        let compiled = compile_all(None).unwrap();
        assert_eq!(compiled.len(), kernel_sources().len());
        assert!(compiled.iter().all(|k| k.ptx_bytes > 0));
    }

    #[test]
    fn a_gpu_older_than_the_kernels_is_refused_before_nvrtc() {
        let e = arch_for_device(5, 2).unwrap_err().to_string();
        assert!(e.contains("compute capability 5.2"), "{e}");
        assert!(e.contains("6.0 or newer"), "{e}");
    }

    #[test]
    fn the_default_arch_is_the_oldest_supported_one_the_kernels_can_use() {
        if !nvrtc_available() {
            eprintln!("skipped: libnvrtc not found on the library path");
            return;
        }
        let archs = supported_archs().unwrap();
        assert!(archs.windows(2).all(|w| w[0] < w[1]), "{archs:?}");
        let default = default_arch().unwrap();
        let n: i32 = default.strip_prefix("compute_").unwrap().parse().unwrap();
        assert!(n >= MIN_ARCH && archs.contains(&n), "{default} {archs:?}");
        assert!(
            archs.iter().all(|&a| a < MIN_ARCH || a >= n),
            "{default} {archs:?}"
        );
        // A device NVRTC knows gets its own architecture; one newer than every supported
        // architecture gets the newest.
        let newest = *archs.last().unwrap();
        assert_eq!(
            arch_for_device(newest / 10, newest % 10).unwrap(),
            format!("compute_{newest}")
        );
        assert_eq!(arch_for_device(99, 9).unwrap(), format!("compute_{newest}"));
    }

    #[test]
    fn a_compile_error_reports_nvrtc_log_with_the_file_name() {
        if !nvrtc_available() {
            eprintln!("skipped: libnvrtc not found on the library path");
            return;
        }
        let broken = KernelSource {
            name: "broken",
            source: "#include \"reduce.cuh\"\nextern \"C\" __global__ void f() { undeclared(); }",
            functions: &["f"],
        };
        let e = compile(&broken, None).unwrap_err().to_string();
        assert!(e.contains("NVRTC failed to compile broken.cu"), "{e}");
        assert!(e.contains("undeclared"), "{e}");
    }
}
