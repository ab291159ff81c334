//! Linux's configfs-tsm report interface (kernel ≥ 6.7): how a confidential VM (Intel TDX, AMD
//! SEV-SNP) asks its TEE for a report over 64 bytes of its own data. Written here because the
//! crates that wrap it are AGPL-licensed.
//!
//! Protocol (Documentation/ABI/testing/configfs-tsm-report): `mkdir` a fresh entry under
//! `/sys/kernel/config/tsm/report/`; write the report data to `inblob`; read `generation`;
//! read `outblob` (the TDX quote or the SNP report) and, where present, `auxblob` (SNP: the
//! certificate table); read `generation` again — if another writer touched the entry in
//! between, the report may be over other data, so it is refused; `provider` names the TEE
//! (`tdx_guest`, `sev_guest`); `rmdir` the entry. The file operations go through `TsmFs`, so
//! the protocol is tested against a fake kernel that keeps the same rules.
//!
//! `CvmPlatform` is the attester of every confidential-VM platform on top of it; what differs
//! (parsing the TEE's report, its code id) is the platform's `CvmTee` (`tdx::Tdx`, `snp::Snp`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::evidence::{Attester, Evidence, Measurement, Platform};
use crate::ProtoError;

/// Where the kernel exposes report entries.
pub const TSM_REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";
/// Largest `outblob` read (a TDX quote with its PCK chain is about 5 KiB; an SNP report 1184 B).
pub const MAX_OUTBLOB: usize = 64 << 10;
/// Largest `auxblob` read (an SNP certificate table: VCEK, ASK, ARK, a few KiB).
pub const MAX_AUXBLOB: usize = 256 << 10;

/// The TEE behind the interface, from `provider`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Tdx,
    SevSnp,
}

/// One report read from the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsmReport {
    pub provider: Provider,
    /// The TDX quote or the SNP attestation report.
    pub outblob: Vec<u8>,
    /// SNP: the certificate table, when the host provided one; otherwise None.
    pub auxblob: Option<Vec<u8>>,
}

/// The file operations the protocol needs (configfs entries behave like files and
/// directories, with the kernel acting on each write and read).
pub trait TsmFs {
    fn create_dir(&self, p: &Path) -> std::io::Result<()>;
    fn remove_dir(&self, p: &Path) -> std::io::Result<()>;
    fn write(&self, p: &Path, data: &[u8]) -> std::io::Result<()>;
    /// Reads at most `max` bytes; more is an error (never truncated silently).
    fn read(&self, p: &Path, max: usize) -> std::io::Result<Vec<u8>>;
}

/// The real filesystem.
pub struct RealFs;

impl TsmFs for RealFs {
    fn create_dir(&self, p: &Path) -> std::io::Result<()> {
        std::fs::create_dir(p)
    }
    fn remove_dir(&self, p: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(p)
    }
    fn write(&self, p: &Path, data: &[u8]) -> std::io::Result<()> {
        std::fs::write(p, data)
    }
    fn read(&self, p: &Path, max: usize) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        std::fs::File::open(p)?
            .take(max as u64 + 1)
            .read_to_end(&mut out)?;
        if out.len() > max {
            return Err(std::io::Error::other(format!(
                "{} holds more than {max} bytes",
                p.display()
            )));
        }
        Ok(out)
    }
}

fn err(m: impl Into<String>) -> ProtoError {
    ProtoError::Attestation(m.into())
}

/// Removes the entry when the report is done (or failed).
struct Entry<'a, F: TsmFs> {
    fs: &'a F,
    dir: PathBuf,
}

impl<F: TsmFs> Drop for Entry<'_, F> {
    fn drop(&mut self) {
        // The kernel frees the entry; a leftover one holds no secret (report data is public).
        let _ = self.fs.remove_dir(&self.dir);
    }
}

fn generation<F: TsmFs>(fs: &F, dir: &Path) -> Result<u64, ProtoError> {
    let g = fs.read(&dir.join("generation"), 32)?;
    std::str::from_utf8(&g)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| err("configfs-tsm: unreadable generation counter"))
}

/// Asks the TEE for a report over `report_data` through the configfs-tsm entries under `root`
/// (`TSM_REPORT_ROOT` in production).
pub fn report<F: TsmFs>(
    fs: &F,
    root: &Path,
    report_data: &[u8; 64],
) -> Result<TsmReport, ProtoError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "origami-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = root.join(name);
    fs.create_dir(&dir).map_err(|e| {
        err(format!(
            "no configfs-tsm report interface at {} ({e}): run inside an Intel TDX or AMD SEV-SNP guest with Linux ≥ 6.7 and configfs mounted at /sys/kernel/config, or use --platform simulated for development",
            root.display()
        ))
    })?;
    let entry = Entry { fs, dir };
    let dir = &entry.dir;
    let provider = fs.read(&dir.join("provider"), 64)?;
    let provider = match std::str::from_utf8(&provider).map(str::trim) {
        Ok("tdx_guest") => Provider::Tdx,
        Ok("sev_guest") => Provider::SevSnp,
        Ok(p) => {
            return Err(err(format!(
                "configfs-tsm provider {p:?} is not supported (tdx_guest, sev_guest)"
            )))
        }
        Err(_) => return Err(err("configfs-tsm: unreadable provider")),
    };
    fs.write(&dir.join("inblob"), report_data)?;
    let before = generation(fs, dir)?;
    let outblob = fs.read(&dir.join("outblob"), MAX_OUTBLOB)?;
    if outblob.is_empty() {
        return Err(err("configfs-tsm returned an empty report"));
    }
    let auxblob = match fs.read(&dir.join("auxblob"), MAX_AUXBLOB) {
        Ok(a) if !a.is_empty() => Some(a),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    if generation(fs, dir)? != before {
        return Err(err(
            "configfs-tsm: the report entry was written by another process while this report was made; refused (retry)",
        ));
    }
    Ok(TsmReport {
        provider,
        outblob,
        auxblob,
    })
}

/// What one confidential-VM platform reads from its TEE's report: the part the attester
/// checks (report data, code id) and what goes into the evidence (proof, collateral).
pub struct GuestReport {
    pub report_data: [u8; 64],
    pub code_id: [u8; 32],
    pub proof: Vec<u8>,
    /// Collateral the guest itself can supply (SNP: the VCEK); empty otherwise.
    pub collateral: String,
}

/// What differs between the confidential-VM platforms behind configfs-tsm.
pub trait CvmTee {
    const PLATFORM: Platform;
    const PROVIDER: Provider;
    /// Parses a report of this TEE (a failure is this guest's own attestation failing).
    fn read(report: TsmReport) -> Result<GuestReport, ProtoError>;
}

impl Provider {
    /// The platform a guest of this provider attests as.
    pub fn platform(self) -> Platform {
        match self {
            Provider::Tdx => Platform::Tdx,
            Provider::SevSnp => Platform::SevSnp,
        }
    }
}

/// A confidential VM's attester: reports from configfs-tsm under `root`, through `fs`.
pub struct CvmPlatform<T: CvmTee, F: TsmFs = RealFs> {
    fs: F,
    root: PathBuf,
    code_id: [u8; 32],
    tee: std::marker::PhantomData<fn() -> T>,
}

impl<T: CvmTee> CvmPlatform<T, RealFs> {
    /// Opens configfs-tsm at its standard place; checks the provider and reads this guest's
    /// code id from a first report.
    pub fn open() -> Result<Self, ProtoError> {
        Self::open_with(RealFs, Path::new(TSM_REPORT_ROOT))
    }
}

impl<T: CvmTee, F: TsmFs> CvmPlatform<T, F> {
    pub fn open_with(fs: F, root: &Path) -> Result<Self, ProtoError> {
        let mut p = CvmPlatform {
            fs,
            root: root.to_path_buf(),
            code_id: [0; 32],
            tee: std::marker::PhantomData,
        };
        p.code_id = p.report(&[0; 64])?.code_id;
        Ok(p)
    }

    fn report(&self, data: &[u8; 64]) -> Result<GuestReport, ProtoError> {
        let r = report(&self.fs, &self.root, data)?;
        if r.provider != T::PROVIDER {
            let other = r.provider.platform().id();
            return Err(err(format!(
                "configfs-tsm's provider is {:?}, not {}: use --platform {other} on this guest",
                r.provider,
                T::PLATFORM.id()
            )));
        }
        T::read(r)
    }
}

impl<T: CvmTee, F: TsmFs + Send> Attester for CvmPlatform<T, F> {
    fn platform(&self) -> Platform {
        T::PLATFORM
    }

    fn code_id(&self) -> [u8; 32] {
        self.code_id
    }

    fn attest(
        &self,
        measurement: Measurement,
        enclave_key: [u8; 32],
        instance: [u8; 16],
    ) -> Result<Evidence, ProtoError> {
        if measurement.code_id != self.code_id {
            return Err(err("the measurement's code id is not this guest's"));
        }
        let mut ev = Evidence::unsigned(T::PLATFORM, measurement, enclave_key, instance, [0; 32]);
        let want = crate::sgx::report_data(&ev.digest());
        let r = self.report(&want)?;
        if r.report_data != want || r.code_id != self.code_id {
            return Err(err(format!(
                "the {} report is over other report data or measurements than this guest's",
                T::PLATFORM.id()
            )));
        }
        ev.proof = r.proof;
        ev.collateral = r.collateral;
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A fake kernel: entries appear on `mkdir` with a provider and generation 0; each write
    /// bumps the generation; `outblob` is made on read from `inblob`; `meddle` simulates
    /// another writer between the two generation reads.
    struct FakeKernel {
        provider: &'static str,
        aux: Option<Vec<u8>>,
        meddle: bool,
        files: Mutex<HashMap<PathBuf, Vec<u8>>>,
        dirs: Mutex<Vec<PathBuf>>,
        removed: Mutex<Vec<PathBuf>>,
    }

    impl FakeKernel {
        fn new(provider: &'static str) -> Self {
            FakeKernel {
                provider,
                aux: None,
                meddle: false,
                files: Mutex::default(),
                dirs: Mutex::default(),
                removed: Mutex::default(),
            }
        }
        fn bump(&self, dir: &Path) {
            let mut f = self.files.lock().unwrap();
            let g: u64 = std::str::from_utf8(&f[&dir.join("generation")])
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            f.insert(dir.join("generation"), format!("{}\n", g + 1).into_bytes());
        }
    }

    impl TsmFs for FakeKernel {
        fn create_dir(&self, p: &Path) -> std::io::Result<()> {
            if !p.starts_with("/fake/tsm/report") {
                return Err(std::io::ErrorKind::NotFound.into());
            }
            self.dirs.lock().unwrap().push(p.to_path_buf());
            let mut f = self.files.lock().unwrap();
            f.insert(
                p.join("provider"),
                format!("{}\n", self.provider).into_bytes(),
            );
            f.insert(p.join("generation"), b"0\n".to_vec());
            if let Some(a) = &self.aux {
                f.insert(p.join("auxblob"), a.clone());
            }
            Ok(())
        }
        fn remove_dir(&self, p: &Path) -> std::io::Result<()> {
            self.removed.lock().unwrap().push(p.to_path_buf());
            Ok(())
        }
        fn write(&self, p: &Path, data: &[u8]) -> std::io::Result<()> {
            assert!(p.ends_with("inblob"), "only inblob is written: {p:?}");
            assert!(data.len() <= 64, "inblob takes at most 64 bytes");
            self.files
                .lock()
                .unwrap()
                .insert(p.to_path_buf(), data.to_vec());
            self.bump(p.parent().unwrap());
            Ok(())
        }
        fn read(&self, p: &Path, max: usize) -> std::io::Result<Vec<u8>> {
            let dir = p.parent().unwrap();
            if p.ends_with("outblob") {
                let inblob = self.files.lock().unwrap()[&dir.join("inblob")].clone();
                if self.meddle {
                    self.bump(dir);
                }
                return Ok([b"REPORT:".as_slice(), &inblob].concat());
            }
            let v = self
                .files
                .lock()
                .unwrap()
                .get(p)
                .cloned()
                .ok_or(std::io::ErrorKind::NotFound)?;
            assert!(v.len() <= max);
            Ok(v)
        }
    }

    const ROOT: &str = "/fake/tsm/report";

    #[test]
    fn a_report_is_made_over_the_written_data_and_the_entry_removed() {
        let k = FakeKernel::new("tdx_guest");
        let data = [7u8; 64];
        let r = report(&k, Path::new(ROOT), &data).unwrap();
        assert_eq!(r.provider, Provider::Tdx);
        assert_eq!(r.outblob, [b"REPORT:".as_slice(), &data].concat());
        assert_eq!(r.auxblob, None);
        // Each report gets its own entry, and each entry is removed.
        report(&k, Path::new(ROOT), &data).unwrap();
        let dirs = k.dirs.lock().unwrap().clone();
        assert_eq!(dirs.len(), 2);
        assert_ne!(dirs[0], dirs[1]);
        assert_eq!(*k.removed.lock().unwrap(), dirs);
    }

    #[test]
    fn snp_reports_carry_the_certificate_table() {
        let mut k = FakeKernel::new("sev_guest");
        k.aux = Some(vec![1, 2, 3]);
        let r = report(&k, Path::new(ROOT), &[0; 64]).unwrap();
        assert_eq!(r.provider, Provider::SevSnp);
        assert_eq!(r.auxblob, Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_concurrent_writer_is_detected_and_the_report_refused() {
        let mut k = FakeKernel::new("tdx_guest");
        k.meddle = true;
        let e = report(&k, Path::new(ROOT), &[0; 64]).unwrap_err();
        assert!(e.to_string().contains("another process"), "{e}");
        // Removed on failure too.
        assert_eq!(k.removed.lock().unwrap().len(), 1);
    }

    #[test]
    fn unknown_providers_and_a_missing_interface_are_clear_errors() {
        let k = FakeKernel::new("arm_cca_guest");
        let e = report(&k, Path::new(ROOT), &[0; 64]).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        let e = report(&k, Path::new("/nonexistent/tsm"), &[0; 64]).unwrap_err();
        assert!(e.to_string().contains("no configfs-tsm"), "{e}");
        let e = report(&RealFs, Path::new("/nonexistent/tsm"), &[0; 64]).unwrap_err();
        assert!(e.to_string().contains("kernel"), "{e}");
    }

    /// The real filesystem reader refuses files over the bound instead of truncating them.
    #[test]
    fn reads_are_bounded() {
        let p = std::env::temp_dir().join(format!("origami-tsm-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 100]).unwrap();
        assert_eq!(RealFs.read(&p, 100).unwrap().len(), 100);
        assert!(RealFs.read(&p, 99).is_err());
        std::fs::remove_file(&p).unwrap();
    }
}
