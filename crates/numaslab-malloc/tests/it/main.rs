//! The shared library under `LD_PRELOAD`: real programs nobody here wrote (a Python
//! interpreter, sqlite3, gcc) give the same output as under glibc's malloc, and their
//! peak resident set is printed beside glibc's; C programs compiled here check the
//! bootstrap cases (threads starting and exiting, fork children, every allocation
//! function, a bad free in debug mode) and the hotplug watcher of a process and of its
//! forked child, and a program that closes every descriptor it did not open and reuses
//! the numbers (`fdreuse.c`: the watcher leaves the program's files alone and opens new
//! descriptors); opt-in, a multi-threaded C program, a
//! multi-threaded Rust program (the example `hotplug_churn`, also in a forked child) and
//! `fdreuse.c` run while cpu1 goes offline and online, and lose nothing.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The library, built in release (the programs are heavy) by the cargo running this
/// test: `target/release/libnumaslab_malloc.so`, where the README says it lands.
fn library() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--release", "-p", "numaslab-malloc", "--lib", "--example", "hotplug_churn"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build");
            assert!(
                status.success(),
                "cargo build --release -p numaslab-malloc (library and example) failed"
            );
            let exe = std::env::current_exe().expect("the test's path");
            // target/<profile>/deps/<test> -> target
            let target = exe.ancestors().nth(3).expect("target/<profile>/deps/<test>");
            let library = target.join("release/libnumaslab_malloc.so");
            assert!(library.is_file(), "{} was not built", library.display());
            library
        })
        .clone()
}

/// Makes the child close, at its `exec`, every descriptor above 2 it inherited from the
/// test (which holds whatever its own parent left open), so that the only ones a program
/// finds are those it opens, and the library's.
fn without_inherited_descriptors(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: close_range(2) is async-signal-safe and only marks descriptors
    // close-on-exec (the one std keeps for reporting an exec failure already is).
    unsafe {
        command.pre_exec(|| {
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A program's output and peak resident set (KiB, from `wait4`'s rusage).
struct Run {
    output: Output,
    peak_kib: i64,
}

// The child is reaped by wait4 (for its rusage), which clippy does not see.
#[allow(clippy::zombie_processes)]
fn run(program: &str, args: &[&str], stdin: Option<&[u8]>, preload: bool, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(program);
    without_inherited_descriptors(&mut command);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::piped());
    command.env("NUMASLAB_WATCH", "1");
    if preload {
        command.env("LD_PRELOAD", library());
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    }
    drop(child.stdin.take());
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing the two out-parameters.
    let waited = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as libc::pid_t, "wait4");
    let output = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out.join().expect("stdout reader").into_bytes(),
        stderr: err.join().expect("stderr reader").into_bytes(),
    };
    Run { output, peak_kib: usage.ru_maxrss }
}

/// Runs a program both ways, asserts the same status and standard output, and prints
/// the peak resident sets.
fn same_both_ways(what: &str, program: &str, args: &[&str], stdin: Option<&[u8]>) {
    let glibc = run(program, args, stdin, false, &[]);
    let numaslab = run(program, args, stdin, true, &[]);
    assert!(
        glibc.output.status.success(),
        "{what} failed under glibc: {}",
        String::from_utf8_lossy(&glibc.output.stderr)
    );
    assert_eq!(
        numaslab.output.status.code(),
        glibc.output.status.code(),
        "{what}: exit status; stderr: {}",
        String::from_utf8_lossy(&numaslab.output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&numaslab.output.stdout),
        String::from_utf8_lossy(&glibc.output.stdout),
        "{what}: output differs under LD_PRELOAD"
    );
    assert!(!glibc.output.stdout.is_empty(), "{what} printed something to compare");
    println!(
        "{what}: peak RSS glibc {} KiB, numaslab {} KiB ({:.2}x)",
        glibc.peak_kib,
        numaslab.peak_kib,
        numaslab.peak_kib as f64 / glibc.peak_kib.max(1) as f64
    );
}

/// A tool on this machine, or `None` after saying why the test skips.
fn tool(name: &str) -> Option<String> {
    let found = ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|dir| format!("{dir}/{name}"))
        .find(|path| Path::new(path).is_file());
    if found.is_none() {
        println!("skipped: no {name} on this machine (.ci/run installs it)");
    }
    found
}

/// Compiles one of this folder's C programs with the system compiler.
fn compile(source: &str, dir: &Path) -> PathBuf {
    let out = dir.join(source.trim_end_matches(".c"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it").join(source);
    let status =
        Command::new("cc").args(["-O1", "-pthread", "-o"]).arg(&out).arg(&source).status().expect("run cc");
    assert!(status.success(), "cc {} failed", source.display());
    out
}

#[test]
fn python_runs_an_allocation_heavy_script_unchanged() {
    let Some(python) = tool("python3") else { return };
    let script = "import json, collections\n\
        words = collections.Counter()\n\
        for i in range(200000):\n    words[str(i * 7919 % 10007)] += 1\n\
        table = {k: [v] * (v % 17) for k, v in words.items()}\n\
        text = json.dumps(table, sort_keys=True)\n\
        back = json.loads(text)\n\
        print(len(words), len(text), sum(len(v) for v in back.values()))\n\
        print(sorted(words.most_common(3)))\n";
    same_both_ways("python3", &python, &["-c", script], None);
}

#[test]
fn sqlite_runs_an_in_memory_database_unchanged() {
    let Some(sqlite) = tool("sqlite3") else { return };
    let sql = b"create table t(a integer primary key, b text, c real);\n\
        with recursive n(i) as (select 1 union all select i + 1 from n where i < 50000)\n\
        insert into t select i, printf('row %08d %s', i, hex(i * 2654435761)), i / 7.0 from n;\n\
        create index tb on t(b);\n\
        select count(*), sum(length(b)), round(sum(c), 3) from t;\n\
        select b from t where a % 9973 = 0 order by b desc;\n\
        delete from t where a % 3 = 0;\n\
        select count(*) from t;\n";
    same_both_ways("sqlite3", &sqlite, &[":memory:"], Some(sql));
}

#[test]
fn gcc_compiles_a_c_file_unchanged() {
    let Some(gcc) = tool("gcc") else { return };
    let dir = std::env::temp_dir().join(format!("numaslab-malloc-gcc-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/churn.c");
    let source = source.to_str().expect("UTF-8 path");
    // -S: the assembly is gcc's deterministic output, compared both ways.
    same_both_ways("gcc -O2 -S", &gcc, &["-O2", "-S", "-o", "-", source], None);
    let binary = dir.join("churn");
    let built = run(&gcc, &["-O2", "-pthread", "-o", binary.to_str().unwrap(), source], None, true, &[]);
    assert!(
        built.output.status.success(),
        "gcc under LD_PRELOAD: {}",
        String::from_utf8_lossy(&built.output.stderr)
    );
    let churned = run(binary.to_str().unwrap(), &["1"], None, false, &[]);
    assert_eq!(String::from_utf8_lossy(&churned.output.stdout), "nothing lost\n");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn bootstrap_threads_fork_children_and_every_allocation_function() {
    let dir = std::env::temp_dir().join(format!("numaslab-malloc-boot-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let program = compile("bootstrap.c", &dir);
    let program = program.to_str().expect("UTF-8 path");
    for env in [&[][..], &[("NUMASLAB_DEBUG", "1")][..]] {
        let result = run(program, &[], None, true, env);
        assert_eq!(
            String::from_utf8_lossy(&result.output.stdout),
            "all good\n",
            "{env:?}; stderr: {}",
            String::from_utf8_lossy(&result.output.stderr)
        );
        assert!(result.output.status.success());
    }
    let bad = run(program, &["bad-free"], None, true, &[("NUMASLAB_DEBUG", "1")]);
    assert_eq!(String::from_utf8_lossy(&bad.output.stdout), "survived 10\n", "the stack was not written");
    let stderr = String::from_utf8_lossy(&bad.output.stderr);
    assert!(stderr.contains("numaslab: free(") && stderr.contains("left alone"), "reported: {stderr}");
    let _ = fs::remove_dir_all(&dir);
}

/// The process and a forked child (once it allocated) each have a `hotplug-watcher`
/// thread, which blocks the program's signals; `NUMASLAB_WATCH=0` starts none in either.
#[test]
fn a_watcher_thread_in_the_process_and_in_a_forked_child() {
    let dir = std::env::temp_dir().join(format!("numaslab-malloc-watcher-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let program = compile("watcher.c", &dir);
    let program = program.to_str().expect("UTF-8 path");
    let watched = run(program, &[], None, true, &[]);
    assert_eq!(
        String::from_utf8_lossy(&watched.output.stdout),
        "parent: 1 watcher, signals blocked\nchild: 1 watcher, signals blocked\n",
        "stderr: {}",
        String::from_utf8_lossy(&watched.output.stderr)
    );
    assert!(watched.output.status.success());
    let unwatched = run(program, &[], None, true, &[("NUMASLAB_WATCH", "0")]);
    assert_eq!(String::from_utf8_lossy(&unwatched.output.stdout), "parent: no watcher\nchild: no watcher\n");
    let glibc = run(program, &[], None, false, &[]);
    assert_eq!(String::from_utf8_lossy(&glibc.output.stdout), "parent: no watcher\nchild: no watcher\n");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn slabinfo_is_printed_at_exit_when_asked() {
    // Not coreutils: their exit handler closes stderr before the library's runs.
    let Some(python) = tool("python3") else { return };
    let result = run(&python, &["-c", "print('hi')"], None, true, &[("NUMASLAB_SHOW_STATS", "1")]);
    let stderr = String::from_utf8_lossy(&result.output.stderr);
    assert!(stderr.starts_with("slabinfo - version: 2.1"), "{stderr}");
    assert!(stderr.contains("kmalloc-32k"), "{stderr}");
    assert_eq!(transitions_followed(&stderr).len(), 1, "the watcher's line: {stderr}");
    let quiet = run(&python, &["-c", "print('hi')"], None, true, &[]);
    assert!(quiet.output.stderr.is_empty());
}

const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";

/// The right to switch cpu1: the exclusive flock every real-hotplug test of the workspace
/// takes, and cpu1 brought back online when it is dropped (whatever the test did).
struct RealHotplug {
    _lock: File,
}

impl RealHotplug {
    /// Waits for the lock; `None` after saying why the test skips.
    fn acquire() -> Option<RealHotplug> {
        if std::env::var("NUMASLAB_REAL_HOTPLUG").as_deref() != Ok("1") {
            println!("skipped: set NUMASLAB_REAL_HOTPLUG=1 (as root, with {CPU1_ONLINE} writable) to run it");
            return None;
        }
        if fs::OpenOptions::new().write(true).open(CPU1_ONLINE).is_err() {
            println!("skipped: {CPU1_ONLINE} is not writable here");
            return None;
        }
        let lock = File::create("/tmp/numaslab-real-hotplug.lock").expect("create the hotplug lock file");
        // SAFETY: flock(2) on a descriptor we own; blocks until the lock is ours.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let hotplug = RealHotplug { _lock: lock };
        fs::write(CPU1_ONLINE, "1").expect("cpu1 online before the test");
        Some(hotplug)
    }

    /// Takes cpu1 offline and back online `cycles` times, 250 ms apart; returns the
    /// number of writes that succeeded.
    fn cycle(&self, cycles: usize) -> usize {
        let mut switches = 0;
        for _ in 0..cycles {
            std::thread::sleep(Duration::from_millis(250));
            fs::write(CPU1_ONLINE, "0").expect("cpu1 offline");
            switches += 1;
            std::thread::sleep(Duration::from_millis(250));
            fs::write(CPU1_ONLINE, "1").expect("cpu1 online");
            switches += 1;
        }
        switches
    }
}

impl Drop for RealHotplug {
    fn drop(&mut self) {
        // Before the lock is released (the field drops after this).
        let _ = fs::write(CPU1_ONLINE, "1");
    }
}

fn cpu1_is_online() -> bool {
    fs::read_to_string(CPU1_ONLINE).is_ok_and(|state| state.trim() == "1")
}

/// cpu1 goes offline and online while a multi-threaded C program allocates under
/// `LD_PRELOAD` (the library's watcher follows; the program checks every block).
#[test]
fn a_threaded_c_program_while_cpu1_goes_offline_and_online() {
    let Some(hotplug) = RealHotplug::acquire() else { return };
    let dir = std::env::temp_dir().join(format!("numaslab-malloc-hotplug-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let program = compile("churn.c", &dir);
    let child = Command::new(&program)
        .arg("4")
        .env("LD_PRELOAD", library())
        .env("NUMASLAB_SHOW_STATS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run churn");
    let switches = hotplug.cycle(6);
    let output = child.wait_with_output().expect("churn finished");
    drop(hotplug);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(switches, 12);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "nothing lost\n", "stderr: {stderr}");
    assert!(output.status.success());
    assert!(cpu1_is_online(), "cpu1 restored");
    let followed = transitions_followed(&stderr);
    assert!(followed.len() == 1 && followed[0] >= 2, "the watcher followed {followed:?}; stderr: {stderr}");
    let _ = fs::remove_dir_all(&dir);
}

/// The counts of `numaslab-malloc[PID]: hotplug watcher (MODE): N CPU transitions
/// followed` lines (`NUMASLAB_SHOW_STATS`), one per process.
fn transitions_followed(stderr: &str) -> Vec<u64> {
    watcher_lines(stderr).into_iter().map(|line| line.followed).collect()
}

/// One `NUMASLAB_SHOW_STATS` line of a watcher: `numaslab-malloc[PID]: hotplug watcher
/// (MODE): N CPU transitions followed[, M lost descriptors replaced]`.
#[derive(Debug)]
struct WatcherLine {
    mode: String,
    followed: u64,
    lost: u64,
}

fn watcher_lines(stderr: &str) -> Vec<WatcherLine> {
    let number = |text: &str, line: &str| -> u64 {
        text.parse().unwrap_or_else(|_| panic!("not a count: {text:?} in {line:?}"))
    };
    stderr
        .lines()
        .filter(|line| line.starts_with("numaslab-malloc[") && !line.contains("]: hotplug watcher: "))
        .map(|line| {
            let (_, rest) =
                line.split_once("]: hotplug watcher (").unwrap_or_else(|| panic!("no watcher in {line:?}"));
            let (mode, rest) = rest.split_once("): ").unwrap_or_else(|| panic!("no mode in {line:?}"));
            let (followed, rest) = rest
                .split_once(" CPU transitions followed")
                .unwrap_or_else(|| panic!("no count in {line:?}"));
            let lost = match rest.strip_prefix(", ") {
                None if rest.is_empty() => 0,
                Some(lost) => number(
                    lost.strip_suffix(" lost descriptors replaced").unwrap_or_else(|| panic!("{line:?}")),
                    line,
                ),
                None => panic!("unexpected {rest:?} in {line:?}"),
            };
            WatcherLine { mode: mode.to_owned(), followed: number(followed, line), lost }
        })
        .collect()
}

/// What `fdreuse.c` said on stderr: the library's descriptors before its close_range
/// (number and what it named), and which of those numbers were the program's after.
fn reused_descriptors(stderr: &str) -> (Vec<(i32, String)>, Vec<i32>) {
    let line = |prefix: &str| {
        stderr
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {stderr}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let before = line("library descriptors before close_range:")
        .iter()
        .map(|entry| {
            let (number, name) = entry.split_once('=').unwrap_or_else(|| panic!("{entry:?}"));
            (number.parse().unwrap_or_else(|_| panic!("{entry:?}")), name.to_owned())
        })
        .collect();
    let after =
        line("now the program's:").iter().map(|n| n.parse().unwrap_or_else(|_| panic!("{n:?}"))).collect();
    (before, after)
}

const FDREUSE_INTACT: &str =
    "descriptors: still the program's\nsocket pair: intact\nfile: intact\npipe: intact\n";

/// Checks a run of `fdreuse.c` under `LD_PRELOAD` (with `NUMASLAB_DEBUG=1` and
/// `NUMASLAB_SHOW_STATS=1`): the program's descriptors intact; every number the library
/// held taken by the program, and each one said lost and replaced, in the stats line too,
/// with the watcher still on uevents if it started on them. Returns the stats line.
fn check_fdreuse(output: &Output) -> WatcherLine {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(String::from_utf8_lossy(&output.stdout), FDREUSE_INTACT, "stderr: {stderr}");
    assert!(output.status.success(), "{}; stderr: {stderr}", output.status);
    let (before, after) = reused_descriptors(&stderr);
    assert!(!before.is_empty(), "the library held descriptors: {stderr}");
    let numbers: Vec<i32> = before.iter().map(|&(number, _)| number).collect();
    assert_eq!(after, numbers, "each of the library's numbers became the program's: {stderr}");
    for number in &numbers {
        let said = format!("hotplug watcher: descriptor {number} (");
        assert!(
            stderr
                .lines()
                .any(|line| line.contains(&said) && line.contains("closed or replaced by the program")),
            "descriptor {number} reported lost: {stderr}"
        );
    }
    let lines = watcher_lines(&stderr);
    assert_eq!(lines.len(), 1, "one stats line: {stderr}");
    let line = lines.into_iter().next().unwrap();
    // More if the watcher took a number back before the program did, which the program
    // then took from it again.
    assert!(line.lost >= numbers.len() as u64, "{line:?}; stderr: {stderr}");
    if before.iter().any(|(_, name)| name.starts_with("socket:")) {
        assert_eq!(line.mode, "uevents", "a new uevent socket, not a fallback: {stderr}");
    }
    line
}

/// A program closes every descriptor it did not open (`close_range(3, ~0U, 0)`) and
/// opens its own, which take the numbers of the watcher's uevent socket and pipe: the
/// watcher, waking several times meanwhile, never reads, writes or closes them (the
/// program finds its datagram, file content, offset and pipe bytes as it left them, as
/// under glibc), reports each number lost and opens new descriptors.
#[test]
fn a_program_that_closes_every_descriptor_keeps_its_own_files_intact() {
    let dir = std::env::temp_dir().join(format!("numaslab-malloc-fdreuse-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let program = compile("fdreuse.c", &dir);
    let program = program.to_str().expect("UTF-8 path");
    let glibc = run(program, &[], None, false, &[]);
    assert_eq!(String::from_utf8_lossy(&glibc.output.stdout), FDREUSE_INTACT);
    let env = [("NUMASLAB_DEBUG", "1"), ("NUMASLAB_SHOW_STATS", "1")];
    let numaslab = run(program, &[], None, true, &env);
    assert_eq!(
        String::from_utf8_lossy(&numaslab.output.stdout),
        String::from_utf8_lossy(&glibc.output.stdout),
        "the same output both ways"
    );
    check_fdreuse(&numaslab.output);
    let _ = fs::remove_dir_all(&dir);
}

/// After closing every descriptor it did not open and taking the watcher's numbers
/// (`fdreuse.c`), a program still has its CPU transitions followed: cpu1 goes offline and
/// online while it runs, and the watcher, on new descriptors, follows.
#[test]
fn after_close_range_the_watcher_still_follows_cpu1() {
    let Some(hotplug) = RealHotplug::acquire() else { return };
    let dir = std::env::temp_dir().join(format!("numaslab-malloc-fdreuse-hotplug-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let program = compile("fdreuse.c", &dir);
    let mut child = without_inherited_descriptors(&mut Command::new(&program))
        .arg("stdin")
        .env("LD_PRELOAD", library())
        .env("NUMASLAB_DEBUG", "1")
        .env("NUMASLAB_SHOW_STATS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fdreuse");
    // The program closes and reopens its descriptors at once; the first switch is 250 ms
    // later.
    let switches = hotplug.cycle(4);
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("fdreuse finished");
    drop(hotplug);
    assert_eq!(switches, 8);
    assert!(cpu1_is_online(), "cpu1 restored");
    let line = check_fdreuse(&output);
    assert!(
        line.followed >= 2,
        "the watcher followed {line:?}; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = fs::remove_dir_all(&dir);
}

/// The example `hotplug_churn`, built in release beside the library.
fn rust_program() -> PathBuf {
    library().with_file_name("examples").join("hotplug_churn")
}

/// cpu1 goes offline and online while a multi-threaded Rust program (`hotplug_churn`:
/// workers handing blocks to each other, threads starting and exiting) allocates through
/// the standard library under `LD_PRELOAD`, in the process itself and in a forked child.
/// The program checks every block and stops when its standard input closes, so the
/// switching falls inside its run.
#[test]
fn a_threaded_rust_program_while_cpu1_goes_offline_and_online() {
    let Some(hotplug) = RealHotplug::acquire() else { return };
    for args in [&[][..], &["--fork"][..]] {
        let mut child = Command::new(rust_program())
            .args(args)
            .env("LD_PRELOAD", library())
            .env("NUMASLAB_SHOW_STATS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hotplug_churn");
        let switches = hotplug.cycle(4);
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("hotplug_churn finished");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(switches, 8);
        assert!(cpu1_is_online(), "cpu1 restored");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "served by numaslab-malloc\nnothing lost\ncpu1 seen offline\n",
            "{args:?}; stderr: {stderr}"
        );
        assert!(output.status.success(), "{args:?}: {}; stderr: {stderr}", output.status);
        // Each process (with --fork, the parent and its child) followed the switching
        // with its own watcher.
        let followed = transitions_followed(&stderr);
        assert_eq!(followed.len(), 1 + args.len(), "{args:?}: one report per process; stderr: {stderr}");
        assert!(followed.iter().all(|&count| count >= 2), "{args:?}: transitions followed {followed:?}");
    }
    drop(hotplug);
    assert!(cpu1_is_online(), "cpu1 restored");
}
