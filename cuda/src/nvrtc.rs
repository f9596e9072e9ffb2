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

/// The result of compiling one kernel family.
#[derive(Debug, Clone)]
pub struct CompiledKernel {
    /// Family name.
    pub name: &'static str,
    /// Size of the generated PTX in bytes.
    pub ptx_bytes: usize,
}

fn options(arch: Option<&str>) -> Vec<String> {
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
    if let Some(arch) = arch {
        options.push(format!("--gpu-architecture={arch}"));
    }
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

/// Compiles one kernel family to PTX, with every header of [`HEADERS`] available to
/// `#include`. `arch` is e.g. `"compute_90"`; `None` uses NVRTC's default.
pub fn compile(kernel: &KernelSource, arch: Option<&str>) -> Result<Ptx> {
    require_nvrtc()?;
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
        if result::compile_program(program.0, &options(arch)).is_err() {
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

/// Compiles every kernel family; no GPU is needed.
pub fn compile_all(arch: Option<&str>) -> Result<Vec<CompiledKernel>> {
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
