//! `make install` and `make uninstall`: the binaries, stripped (unless
//! `STRIP=`), and the systemd units land under PREFIX (staged in DESTDIR),
//! the units name the installed binaries and pass `systemd-analyze verify`
//! through `make verify-units`, and uninstall leaves no file behind.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SERVER: &str = env!("CARGO_BIN_EXE_blocking-server");
const PROGRAMS: [&str; 2] = ["blocking-server", "blocking-local"];
/// Longest any one command here may take; one that runs longer is killed.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a command to its end, at most TIMEOUT: exit status and its output,
/// stdout then stderr.
fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let readers = [drain(child.stdout.take().unwrap()), drain(child.stderr.take().unwrap())];
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = readers.map(|r| r.join().unwrap()).concat();
    (status.code(), output)
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// `make TARGET DESTDIR=destdir VARS...` in the crate's directory, installing
/// the binaries this test run built. Panics unless it succeeds.
fn make(target: &str, destdir: &Path, vars: &[&str]) -> String {
    let bin = Path::new(SERVER).parent().unwrap();
    let mut cmd = Command::new("make");
    cmd.current_dir(ROOT)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .args(["--no-print-directory", target])
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("BIN={}", bin.display()))
        .args(vars);
    let (code, out) = run(&mut cmd);
    assert_eq!(code, Some(0), "make {target} failed:\n{out}");
    out
}

/// Every file (not directory) under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A fresh empty directory for this test under cargo's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("install-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn have(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs with `vars` into a fresh DESTDIR and checks the files, their
/// modes and the units' ExecStart against `prefix`. Returns the DESTDIR.
fn install(name: &str, prefix: &str, vars: &[&str]) -> PathBuf {
    let destdir = scratch(name);
    make("install", &destdir, vars);
    let unit_dir = format!("{prefix}/lib/systemd/system");
    let mut expected: Vec<PathBuf> = PROGRAMS
        .iter()
        .flat_map(|p| [format!("{prefix}/bin/{p}"), format!("{unit_dir}/{p}.service")])
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .collect();
    expected.sort();
    assert_eq!(files(&destdir), expected, "make install {vars:?} put other files");

    use std::os::unix::fs::PermissionsExt;
    for p in PROGRAMS {
        let bin = destdir.join(format!("{}/bin/{p}", prefix.trim_start_matches('/')));
        assert_eq!(fs::metadata(&bin).unwrap().permissions().mode() & 0o777, 0o755, "{}", bin.display());
        let unit_path = destdir.join(format!("{}/{p}.service", unit_dir.trim_start_matches('/')));
        assert_eq!(fs::metadata(&unit_path).unwrap().permissions().mode() & 0o777, 0o644);
        let unit = fs::read_to_string(&unit_path).unwrap();
        assert!(!unit.contains("@BINDIR@"), "{} still holds @BINDIR@", unit_path.display());
        let exec: Vec<&str> = unit.lines().filter(|l| l.starts_with("ExecStart=")).collect();
        assert_eq!(exec.len(), 1, "{}: {exec:?}", unit_path.display());
        assert!(
            exec[0].starts_with(&format!("ExecStart={prefix}/bin/{p} ")),
            "{} runs {} instead of {prefix}/bin/{p}",
            unit_path.display(),
            exec[0]
        );
        // systemctl reload is SIGHUP, which makes the binary read its files again.
        let reload: Vec<&str> = unit.lines().filter(|l| l.starts_with("ExecReload=")).collect();
        assert_eq!(reload, ["ExecReload=/bin/kill -HUP $MAINPID"], "{}", unit_path.display());
    }
    destdir
}

#[test]
fn install_puts_binaries_and_units_under_the_prefix_and_uninstall_removes_them() {
    if !have("make") {
        println!("SKIPPED: make is not installed");
        return;
    }
    // The default prefix: stripped binaries, a fraction of the built ones' size.
    let built = |p: &str| fs::metadata(Path::new(SERVER).with_file_name(p)).unwrap().len();
    let destdir = install("default", "/usr/local", &[]);
    for p in PROGRAMS {
        let installed = fs::metadata(destdir.join(format!("usr/local/bin/{p}"))).unwrap().len();
        eprintln!("make install: {p} {installed} bytes (built: {} bytes)", built(p));
        assert!(installed < built(p) / 2, "{p} is not stripped: {installed} bytes of {}", built(p));
    }
    make("uninstall", &destdir, &[]);
    assert_eq!(files(&destdir), Vec::<PathBuf>::new(), "make uninstall left files behind");
    fs::remove_dir_all(&destdir).unwrap();

    // STRIP= keeps the debug info: the binaries as built.
    let destdir = install("unstripped", "/usr/local", &["STRIP="]);
    for p in PROGRAMS {
        let installed = fs::metadata(destdir.join(format!("usr/local/bin/{p}"))).unwrap().len();
        eprintln!("make install STRIP=: {p} {installed} bytes");
        assert_eq!(installed, built(p), "{p} with STRIP=");
    }
    make("uninstall", &destdir, &[]);
    fs::remove_dir_all(&destdir).unwrap();

    // PREFIX=/usr, as a distribution package would.
    let destdir = install("usr", "/usr", &["PREFIX=/usr"]);

    if have("systemd-analyze") {
        // verify wants each ExecStart's binary where the unit names it, which a
        // staged install has under DESTDIR: make verify-units checks copies of
        // the staged units that point there (install() has already checked the
        // installed ExecStart lines).
        let out = make("verify-units", &destdir, &["PREFIX=/usr"]);
        eprintln!("make verify-units DESTDIR=… PREFIX=/usr:\n{out}");
        assert!(
            out.contains("systemd-analyze verify blocking-server.service blocking-local.service"),
            "{out}"
        );
        // Unknown keys and bad values are warnings with exit status 0.
        let about_ours: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("blocking-") && !l.starts_with("systemd-analyze verify"))
            .collect();
        assert!(about_ours.is_empty(), "systemd-analyze verify complains:\n{}", about_ours.join("\n"));
    } else {
        println!(
            "SKIPPED: systemd-analyze verify (systemd-analyze is not installed; `make deps` installs it)"
        );
    }

    make("uninstall", &destdir, &["PREFIX=/usr"]);
    assert_eq!(files(&destdir), Vec::<PathBuf>::new(), "make uninstall PREFIX=/usr left files behind");
    fs::remove_dir_all(&destdir).unwrap();
}
