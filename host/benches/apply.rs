//! `cargo bench -p molt --bench apply`: publish and apply a large release end to end with the
//! real `molt` binary, next to `sha256sum PKG && tar xzf PKG -C DIR` on the same package.
//!
//! It generates two release trees in a scratch directory (default ~1 GiB over 10,000 files in
//! nested directories; the second identical except 10 files), publishes them as 1.0.0 and 1.1.0
//! (full packages plus a 10-file patch), then applies 1.0.0 into an empty install (full) and
//! 1.1.0 on top (patch). Every step is its own process, measured for wall time, CPU time and
//! peak RSS with `wait4`. Nothing is asserted about the timings: this prints a table.
//!
//! Real release trees: `MOLT_BENCH_OLD` and `MOLT_BENCH_NEW` name two trees (e.g. two
//! versions of a program, or two `npm install`s) to publish as 1.0.0 and 1.1.0 instead of the
//! generated ones. Either way the run also measures what a user would do instead: `tar czf`
//! and `tar cf | zstd -T0` of the new tree (against publish), `zstd -19 --long` of its tar and
//! `zstd -19 --long --patch-from` of the old tar to the new (against package and patch bytes),
//! `sha256sum PKG && tar xf PKG -C DIR && sync` (against the full apply) and
//! `rsync -a --delete NEW/ INSTALL/ && sync` into a copy of the old tree (against the patch
//! apply). Needs `zstd` and `rsync` on the PATH.
//!
//! Overrides: `MOLT_BENCH_MB` (total tree size, default 1024), `MOLT_BENCH_FILES` (default
//! 10000), `MOLT_BENCH_CHANGED` (files changed in 1.1.0, default 10), `MOLT_BENCH_DIR` (where
//! the scratch directory goes; keep it on the filesystem you care about), `MOLT_BENCH_KEEP`
//! (keep the scratch directory).

mod common;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{BenchError, Child, MIB, Measured, Table, env_count, mib, molt_binary, ratio};
use molt::repo::manifest::{Manifest, Package, Patch};
use molt::version::Version;

const PRODUCT: &str = "bench-app";
const SEED_TREE: u64 = 0x6d6f_6c74_2d62_656e;
const SEED_CHANGED: u64 = 0x6368_616e_6765_6421;
/// Content is produced in blocks of this size; each block is either raw PRNG bytes
/// (incompressible) or PRNG nibbles spelled as hex text (compresses about 2:1, no long matches),
/// so gzip has real work and the package is somewhat smaller than the tree, as with binaries.
const BLOCK: usize = 64 * 1024;

/// splitmix64: a fast, seeded, well-mixed generator (not for cryptography).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `block` with either random bytes or random hex text.
    fn fill_block(&mut self, block: &mut [u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        if self.next() & 1 == 0 {
            for chunk in block.chunks_mut(8) {
                let bytes = self.next().to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        } else {
            for chunk in block.chunks_mut(16) {
                let mut word = self.next();
                for byte in chunk {
                    *byte = HEX[(word & 0xf) as usize];
                    word >>= 4;
                }
            }
        }
    }
}

/// The layout of a generated release tree.
struct TreeSpec {
    sizes: Vec<u64>,
}

impl TreeSpec {
    /// `files` files totalling exactly `total` bytes, sizes spread over 0.25x–1.75x the mean.
    fn new(total: u64, files: u64) -> TreeSpec {
        let mut rng = SplitMix64(SEED_TREE ^ files);
        let weights: Vec<u64> = (0..files).map(|_| 1 + rng.next() % 6).collect();
        let weight_sum: u64 = weights.iter().sum();
        let mut sizes: Vec<u64> = weights
            .iter()
            .map(|w| (u128::from(total) * u128::from(*w) / u128::from(weight_sum)) as u64)
            .collect();
        let assigned: u64 = sizes.iter().sum();
        if let Some(last) = sizes.last_mut() {
            *last += total - assigned;
        }
        TreeSpec { sizes }
    }

    /// `lib/dNN/mNN/file-NNNNN.bin`: 20 × 25 directories, three levels deep.
    fn path(index: usize) -> PathBuf {
        PathBuf::from(format!(
            "lib/d{:02}/m{:02}/file-{index:05}.bin",
            index % 20,
            (index / 20) % 25
        ))
    }

    fn mode(index: usize) -> u32 {
        if index.is_multiple_of(50) {
            0o755
        } else {
            0o644
        }
    }

    /// The files 1.1.0 changes: `count` indices spread evenly over the tree.
    fn changed(&self, count: u64) -> Vec<usize> {
        let files = self.sizes.len();
        let count = usize::try_from(count).unwrap_or(files).min(files);
        (0..count)
            .map(|k| k * files / count + files / (2 * count))
            .collect()
    }

    fn total(&self) -> u64 {
        self.sizes.iter().sum()
    }
}

fn write_file(path: &Path, size: u64, rng: &mut SplitMix64, mode: u32) -> Result<(), BenchError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(BenchError::io("cannot create", parent))?;
    }
    let mut file = File::create(path).map_err(BenchError::io("cannot create", path))?;
    let mut block = vec![0u8; BLOCK];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(BLOCK).min(BLOCK);
        rng.fill_block(&mut block[..n]);
        file.write_all(&block[..n])
            .map_err(BenchError::io("cannot write", path))?;
        left -= n as u64;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(BenchError::io("cannot chmod", path))
}

/// Writes 1.0.0's tree, then 1.1.0's: hard links to 1.0.0's files except the changed ones,
/// which get new content of the same size.
fn generate_trees(
    spec: &TreeSpec,
    changed: &[usize],
    v1: &Path,
    v2: &Path,
) -> Result<(), BenchError> {
    let mut rng = SplitMix64(SEED_TREE);
    for (index, size) in spec.sizes.iter().enumerate() {
        write_file(
            &v1.join(TreeSpec::path(index)),
            *size,
            &mut rng,
            TreeSpec::mode(index),
        )?;
    }
    let mut rng = SplitMix64(SEED_CHANGED);
    for (index, size) in spec.sizes.iter().enumerate() {
        let rel = TreeSpec::path(index);
        let target = v2.join(&rel);
        if changed.contains(&index) {
            write_file(&target, *size, &mut rng, TreeSpec::mode(index))?;
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(BenchError::io("cannot create", parent))?;
            }
            fs::hard_link(v1.join(&rel), &target)
                .map_err(BenchError::io("cannot hard-link into", &target))?;
        }
    }
    Ok(())
}

/// Runs measured processes in the scratch directory.
struct Runner<'a> {
    root: &'a Path,
    logs: PathBuf,
}

impl Runner<'_> {
    fn run(&self, label: &str, program: &OsStr, args: &[&OsStr]) -> Result<Measured, BenchError> {
        Child {
            label,
            program,
            args: args.to_vec(),
            cwd: self.root,
            logs: &self.logs,
        }
        .run()
    }

    fn molt(&self, label: &str, args: &[&OsStr]) -> Result<Measured, BenchError> {
        self.run(label, molt_binary().as_os_str(), args)
    }

    fn publish(&self, version: &str, tree: &Path) -> Result<Measured, BenchError> {
        let os = |s: &'static str| OsStr::new(s);
        self.molt(
            &format!("publish-{version}"),
            &[
                os("publish"),
                os("--repo"),
                os("repo"),
                os("--key"),
                os("keys/release.key.pem"),
                os("--product"),
                os(PRODUCT),
                os("--version"),
                OsStr::new(version),
                os("--tree"),
                tree.as_os_str(),
            ],
        )
    }

    /// `molt apply --json` plus `extra`; checks the final JSON object says `ok` and `kind`.
    fn apply(&self, label: &str, extra: &[&str], kind: &str) -> Result<Measured, BenchError> {
        let args: Vec<&OsStr> = ["apply", "--config", "molt.toml", "--json"]
            .iter()
            .chain(extra)
            .map(OsStr::new)
            .collect();
        let measured = self.molt(label, &args)?;
        let last = measured.final_object()?;
        if last["result"] != "ok" || last["kind"] != kind {
            return Err(BenchError::Unexpected {
                command: format!("molt {}", extra.join(" ")),
                reason: format!("expected a {kind} update, got {last}"),
            });
        }
        Ok(measured)
    }
}

fn read_manifest(repo: &Path) -> Result<Manifest, BenchError> {
    let path = repo.join("manifest.json");
    let bytes = fs::read(&path).map_err(BenchError::io("cannot read", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| BenchError::Unexpected {
        command: "molt publish".into(),
        reason: format!("{} is not a manifest: {e}", path.display()),
    })
}

/// The full package and the patch from 1.0.0 of `version`: its plain package, its delta package
/// when publish made one, and the bytes of its patch document when it has one (fetched too).
type Packages = (Package, Option<(Package, Option<Package>, u64)>);

fn packages(repo: &Path, manifest: &Manifest, version: &str) -> Result<Packages, BenchError> {
    let missing = |what: &str| BenchError::Unexpected {
        command: "molt publish".into(),
        reason: format!("the manifest has no {what} for {version}"),
    };
    let wanted = Version::parse(version).map_err(molt::Error::from)?;
    let from = Version::parse("1.0.0").map_err(molt::Error::from)?;
    let release = manifest
        .release(&wanted, "stable")
        .ok_or_else(|| missing("release"))?;
    let artifacts = release
        .artifacts_for(molt::version::host_arch())
        .ok_or_else(|| missing("artifacts for this arch"))?;
    let full = artifacts
        .full
        .clone()
        .ok_or_else(|| missing("full package"))?;
    let in_document = |d: &molt::repo::manifest::PatchDocument| -> Result<Patch, BenchError> {
        let path = repo.join(d.document.url.as_str());
        let unreadable = |reason: String| BenchError::Unexpected {
            command: "molt publish".into(),
            reason: format!("patch document {}: {reason}", path.display()),
        };
        let bytes = fs::read(&path).map_err(|e| unreadable(e.to_string()))?;
        let json = zstd::decode_all(&bytes[..]).map_err(|e| unreadable(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| unreadable(e.to_string()))
    };
    let patch = match (
        artifacts.patch_from(&from),
        artifacts.patch_document_from(&from),
    ) {
        (Some(p), _) => Some((p.clone(), 0)),
        (None, Some(d)) => Some((in_document(d)?, d.document.size)),
        (None, None) => None,
    };
    let patch = patch.map(|(p, document)| {
        let delta = p.delta.as_ref().map(|d| d.package.clone());
        (p.package, delta, document)
    });
    Ok((full, patch))
}

/// Seconds with millisecond precision.
fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn throughput(bytes: u64, wall: Duration) -> String {
    format!("{:.0}", bytes as f64 / MIB / wall.as_secs_f64().max(1e-9))
}

fn main() -> Result<(), BenchError> {
    common::serve_as_measuring_helper();
    let megabytes = env_count("MOLT_BENCH_MB", 1024)?;
    let files = env_count("MOLT_BENCH_FILES", 10_000)?;
    let changed_count = env_count("MOLT_BENCH_CHANGED", 10)?;
    let scratch = common::scratch_dir("molt-bench-apply-")?;
    let root = scratch.path();
    let runner = Runner {
        root,
        logs: root.join("logs"),
    };
    fs::create_dir_all(&runner.logs).map_err(BenchError::io("cannot create", &runner.logs))?;

    let given = (
        std::env::var_os("MOLT_BENCH_OLD"),
        std::env::var_os("MOLT_BENCH_NEW"),
    );
    let (v1, v2) = match given {
        (Some(old), Some(new)) => (PathBuf::from(old), PathBuf::from(new)),
        _ => {
            let spec = TreeSpec::new(megabytes * 1024 * 1024, files);
            let changed = spec.changed(changed_count);
            let (v1, v2) = (root.join("tree-1.0.0"), root.join("tree-1.1.0"));
            let started = Instant::now();
            generate_trees(&spec, &changed, &v1, &v2)?;
            let generated = started.elapsed();
            println!(
                "generated both trees in {} s ({} MiB/s)",
                secs(generated),
                throughput(spec.total(), generated)
            );
            (v1, v2)
        }
    };
    let old_listing = molt::tree::TreeListing::scan(&v1, &[]).map_err(molt::Error::from)?;
    let new_listing = molt::tree::TreeListing::scan(&v2, &[]).map_err(molt::Error::from)?;
    let total = new_listing.total_size();
    let changed_files: Vec<u64> = new_listing
        .files
        .iter()
        .filter(|(p, r)| old_listing.files.get(*p) != Some(*r) && !r.is_link())
        .map(|(_, r)| r.size)
        .collect();
    let changed_bytes: u64 = changed_files.iter().sum();
    println!(
        "molt apply bench ({}), {}: old {} ({} files, {} links, {} MiB), new {} ({} files, {} \
         links, {} MiB); {} files ({} MiB) changed or new; in {}",
        common::today(),
        molt_binary().display(),
        v1.display(),
        old_listing.files.len() - old_listing.links().count(),
        old_listing.links().count(),
        mib(old_listing.total_size()),
        v2.display(),
        new_listing.files.len() - new_listing.links().count(),
        new_listing.links().count(),
        mib(total),
        changed_files.len(),
        mib(changed_bytes),
        root.display()
    );

    let os = OsStr::new;
    let floor = runner.run("floor", os("true"), &[])?;
    let keygen = runner.molt("keygen", &[os("keygen"), os("--out-dir"), os("keys")])?;
    let publish_full = runner.publish("1.0.0", &v1)?;
    let publish_patch = runner.publish("1.1.0", &v2)?;
    let manifest = read_manifest(&root.join("repo"))?;
    let (full_package, _) = packages(&root.join("repo"), &manifest, "1.0.0")?;
    let (_, patch_package) = packages(&root.join("repo"), &manifest, "1.1.0")?;
    let (patch_package, delta_package, document_bytes) =
        patch_package.ok_or_else(|| BenchError::Unexpected {
            command: "molt publish 1.1.0".into(),
            reason: "no patch from 1.0.0 was published".into(),
        })?;
    // What the patch apply fetches: the delta package when there is one, and the patch's
    // document when its metadata is one.
    let mut fetched_patch = delta_package
        .clone()
        .unwrap_or_else(|| patch_package.clone());
    fetched_patch.size += document_bytes;
    let package_path = root.join("repo").join(&full_package.url);

    // What a user would do instead. Publishing: compress the new tree.
    let sh = |label: &str, script: &str, args: &[&OsStr]| {
        let script = OsString::from(script);
        let mut all: Vec<&OsStr> = vec![os("-c"), &script, os("sh")];
        all.extend_from_slice(args);
        runner.run(label, os("sh"), &all)
    };
    let czf = sh(
        "tar-czf",
        "tar czf \"$1\" -C \"$2\" .",
        &[os("new.tar.gz"), v2.as_os_str()],
    )?;
    let zstd_t0 = sh(
        "tar-zstd",
        "tar cf - -C \"$2\" . | zstd -q -T0 -o \"$1\"",
        &[os("new.tar.zst"), v2.as_os_str()],
    )?;
    // Package and patch bytes: zstd at its strongest, whole and as a delta of the tars.
    sh(
        "tar-old",
        "tar cf \"$1\" -C \"$2\" .",
        &[os("old.tar"), v1.as_os_str()],
    )?;
    sh(
        "tar-new",
        "tar cf \"$1\" -C \"$2\" .",
        &[os("new.tar"), v2.as_os_str()],
    )?;
    let zstd_19 = sh(
        "zstd-19",
        "zstd -q -19 --long=27 -T0 -o \"$2\" \"$1\"",
        &[os("new.tar"), os("new.tar.19.zst")],
    )?;
    let patch_from = sh(
        "zstd-patch-from",
        "zstd -q -19 --long=27 -T0 --patch-from=\"$1\" -o \"$3\" \"$2\"",
        &[os("old.tar"), os("new.tar"), os("patch-from.zst")],
    )?;
    let size_of = |name: &str| fs::metadata(root.join(name)).map_or(0, |m| m.len());

    // Full apply: hash the package, then unpack it into an empty directory and sync.
    let untar_dir = root.join("baseline");
    fs::create_dir_all(&untar_dir).map_err(BenchError::io("cannot create", &untar_dir))?;
    let baseline = sh(
        "baseline",
        "sha256sum \"$1\" && tar xf \"$1\" -C \"$2\" && sync",
        &[package_path.as_os_str(), untar_dir.as_os_str()],
    )?;
    // Patch apply: rsync the new tree over a copy of the old one and sync.
    let rsync_dir = root.join("rsync-install");
    sh(
        "rsync-prepare",
        "cp -a \"$1\" \"$2\"",
        &[v1.as_os_str(), rsync_dir.as_os_str()],
    )?;
    let mut v2_slash = v2.clone().into_os_string();
    v2_slash.push("/");
    let mut rsync_slash = rsync_dir.clone().into_os_string();
    rsync_slash.push("/");
    let rsync = sh(
        "rsync",
        "rsync -a --delete \"$1\" \"$2\" && sync",
        &[&v2_slash, &rsync_slash],
    )?;

    let config = format!(
        "product = \"{PRODUCT}\"\ninstall_dir = \"install\"\ndevice_id = \"bench\"\n\n\
         [source]\nurl = \"file://{}\"\nkeys = [\"keys/release.pub.pem\"]\n",
        root.join("repo").display()
    );
    let config_path = root.join("molt.toml");
    fs::write(&config_path, config).map_err(BenchError::io("cannot write", &config_path))?;

    let check = runner.molt(
        "check",
        &[os("check"), os("--config"), os("molt.toml"), os("--json")],
    )?;
    let apply_full = runner.apply("apply-full", &["--version", "1.0.0"], "full")?;
    let apply_patch = runner.apply("apply-patch", &[], "patch")?;
    let verify = runner.molt("verify", &[os("verify"), os("--config"), os("molt.toml")])?;

    let mut table = Table::new(&[
        "step",
        "wall s",
        "MiB/s",
        "CPU s",
        "peak RSS MiB",
        "vs baseline",
    ]);
    let mut row = |step: &str, m: &Measured, bytes: Option<u64>| {
        table.row(vec![
            step.to_owned(),
            secs(m.wall),
            bytes.map_or_else(|| "-".to_owned(), |b| throughput(b, m.wall)),
            secs(m.cpu),
            mib(m.peak_rss_bytes),
            ratio(m.wall, baseline.wall),
        ]);
    };
    row("measurement floor: true", &floor, None);
    row("molt keygen", &keygen, None);
    row("baseline: tar czf (new tree)", &czf, Some(total));
    row(
        "baseline: tar cf | zstd -T0 (new tree)",
        &zstd_t0,
        Some(total),
    );
    row("molt publish 1.0.0 (full)", &publish_full, Some(total));
    row(
        "molt publish 1.1.0 (full + patch)",
        &publish_patch,
        Some(total),
    );
    row("molt check (compiles the plugin)", &check, None);
    row(
        "baseline: sha256sum + tar xf + sync (full)",
        &baseline,
        Some(total),
    );
    row(
        "molt apply 1.0.0 (full, empty install)",
        &apply_full,
        Some(total),
    );
    row("baseline: rsync -a --delete + sync (patch)", &rsync, None);
    row(
        &format!("molt apply 1.1.0 (patch, {} files)", changed_files.len()),
        &apply_patch,
        None,
    );
    row("molt verify (hashes the install)", &verify, Some(total));
    row("zstd -19 --long (new tar)", &zstd_19, Some(total));
    row(
        "zstd -19 --long --patch-from old tar",
        &patch_from,
        Some(total),
    );
    println!();
    table.print();
    println!();
    println!(
        "vs baseline: each row's wall time over the full-apply baseline; the ratios that matter \
         are in the summary below"
    );
    let mut summary = Table::new(&["measure", "molt", "reference", "molt / reference"]);
    let bytes_row = |summary: &mut Table, what: &str, molt: u64, reference: u64| {
        summary.row(vec![
            what.to_owned(),
            format!("{} MiB", mib(molt)),
            format!("{} MiB", mib(reference)),
            format!("{:.2}", molt as f64 / reference.max(1) as f64),
        ]);
    };
    let time_row = |summary: &mut Table, what: &str, molt: Duration, reference: Duration| {
        summary.row(vec![
            what.to_owned(),
            format!("{} s", secs(molt)),
            format!("{} s", secs(reference)),
            format!(
                "{:.2}",
                molt.as_secs_f64() / reference.as_secs_f64().max(1e-9)
            ),
        ]);
    };
    bytes_row(
        &mut summary,
        "full package vs zstd -19 --long of the tar",
        full_package.size,
        size_of("new.tar.19.zst"),
    );
    bytes_row(
        &mut summary,
        "full package vs tar czf",
        full_package.size,
        size_of("new.tar.gz"),
    );
    bytes_row(
        &mut summary,
        "patch (as fetched) vs zstd --patch-from old tar -> new tar",
        fetched_patch.size,
        size_of("patch-from.zst"),
    );
    bytes_row(
        &mut summary,
        "plain patch (no deltas) vs zstd --patch-from",
        patch_package.size + document_bytes,
        size_of("patch-from.zst"),
    );
    bytes_row(
        &mut summary,
        "patch (as fetched) vs bytes of changed files",
        fetched_patch.size,
        changed_bytes,
    );
    time_row(
        &mut summary,
        "publish 1.1.0 (full + patch) vs tar czf",
        publish_patch.wall,
        czf.wall,
    );
    time_row(
        &mut summary,
        "publish 1.0.0 + 1.1.0 vs tar czf",
        publish_full.wall + publish_patch.wall,
        czf.wall,
    );
    time_row(
        &mut summary,
        "publish 1.1.0 vs tar cf | zstd -T0",
        publish_patch.wall,
        zstd_t0.wall,
    );
    time_row(
        &mut summary,
        "full apply vs sha256sum + tar xf + sync",
        apply_full.wall,
        baseline.wall,
    );
    time_row(
        &mut summary,
        "patch apply vs rsync -a --delete + sync",
        apply_patch.wall,
        rsync.wall,
    );
    summary.row(vec![
        "peak RSS: apply full / patch / baseline tar / rsync".to_owned(),
        format!(
            "{} / {} MiB",
            mib(apply_full.peak_rss_bytes),
            mib(apply_patch.peak_rss_bytes)
        ),
        format!(
            "{} / {} MiB",
            mib(baseline.peak_rss_bytes),
            mib(rsync.peak_rss_bytes)
        ),
        "-".to_owned(),
    ]);
    summary.print();
    println!();
    println!(
        "notes: the filesystem is synced before each step. molt apply fsyncs every extracted \
         file and directory, its journal and the directories it changes; the baselines end \
         with sync. A baseline's peak RSS is the largest of its processes, not their sum."
    );
    Ok(())
}
