//! `transfer-engine plugins new`: writes a new plugin folder, ready to build.
//!
//! A new plugin author should not have to learn the toolchains before seeing
//! a plugin work, so [`write`] lays out a folder NAME/ with a small but real
//! policy for one world in one language, a README, sample transfers with the
//! verdicts they must get (`transfers.jsonl`, checked by `plugins test`),
//! a copy of the WIT (so the folder is self-contained), and one command,
//! `./build.sh`, that writes `dist/NAME.wasm`. From there `plugins test` and
//! `plugins push` take over.
//!
//! The templates live in `engine/templates/plugin/` and are compiled into
//! the binary with `include_str!`, so the command works from any directory
//! and the templates cannot drift from the engine that ships them. They are
//! filled by plain text replacement of a few placeholders (`{{name}}`,
//! `{{crate_name}}`, `{{world}}`, and the shared `{{policy}}` and `{{rules}}`
//! README sections): a template engine would be one more dependency for
//! five substitutions.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use super::PluginKind as World;

/// The language of a new plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    pub const ALL: [Self; 3] = [Self::Rust, Self::Python, Self::Js];

    /// Accepts "rust", "python" or "py", "js" or "javascript".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rust" => Some(Self::Rust),
            "python" | "py" => Some(Self::Python),
            "js" | "javascript" => Some(Self::Js),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::Js => "js",
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("plugin names are 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter; {0:?} is not")]
    BadName(String),
    #[error("{} already exists and is not an empty directory", .0.display())]
    TargetExists(PathBuf),
    #[error("could not write {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The engine's own interface, copied into every new plugin.
const WIT: &str = include_str!("../../../wit/plugin.wit");

/// Shared by every language: the README's policy and rules sections, and the sample transfers.
mod common {
    pub const RULES: &str = include_str!("../../templates/plugin/common/rules.md");
    pub const POLICY_VALIDATOR: &str = include_str!("../../templates/plugin/common/policy_validator.md");
    pub const POLICY_CONVERTER: &str = include_str!("../../templates/plugin/common/policy_converter.md");
    pub const POLICY_DESCRIBER: &str = include_str!("../../templates/plugin/common/policy_describer.md");
    pub const TRANSFERS_VALIDATOR: &str = include_str!("../../templates/plugin/common/transfers_validator.jsonl");
    pub const TRANSFERS_CONVERTER: &str = include_str!("../../templates/plugin/common/transfers_converter.jsonl");
    pub const TRANSFERS_DESCRIBER: &str = include_str!("../../templates/plugin/common/transfers_describer.jsonl");
}

mod python {
    pub const APP_VALIDATOR: &str = include_str!("../../templates/plugin/python/app_validator.py");
    pub const APP_CONVERTER: &str = include_str!("../../templates/plugin/python/app_converter.py");
    pub const APP_DESCRIBER: &str = include_str!("../../templates/plugin/python/app_describer.py");
    pub const BUILD: &str = include_str!("../../templates/plugin/python/build.sh");
    pub const README: &str = include_str!("../../templates/plugin/python/README.md");
    pub const GITIGNORE: &str = include_str!("../../templates/plugin/python/gitignore");
}

mod js {
    pub const VALIDATOR: &str = include_str!("../../templates/plugin/js/validator.js");
    pub const CONVERTER: &str = include_str!("../../templates/plugin/js/converter.js");
    pub const DESCRIBER: &str = include_str!("../../templates/plugin/js/describer.js");
    pub const PACKAGE: &str = include_str!("../../templates/plugin/js/package.json");
    pub const COMPONENTIZE: &str = include_str!("../../templates/plugin/js/componentize.mjs");
    pub const BUILD: &str = include_str!("../../templates/plugin/js/build.sh");
    pub const README: &str = include_str!("../../templates/plugin/js/README.md");
    pub const GITIGNORE: &str = include_str!("../../templates/plugin/js/gitignore");
}

mod rust {
    pub const CARGO: &str = include_str!("../../templates/plugin/rust/Cargo.toml");
    pub const RUSTFMT: &str = include_str!("../../templates/plugin/rust/rustfmt.toml");
    pub const LIB_VALIDATOR: &str = include_str!("../../templates/plugin/rust/lib_validator.rs");
    pub const LIB_CONVERTER: &str = include_str!("../../templates/plugin/rust/lib_converter.rs");
    pub const LIB_DESCRIBER: &str = include_str!("../../templates/plugin/rust/lib_describer.rs");
    pub const BUILD: &str = include_str!("../../templates/plugin/rust/build.sh");
    pub const README: &str = include_str!("../../templates/plugin/rust/README.md");
    pub const GITIGNORE: &str = include_str!("../../templates/plugin/rust/gitignore");
}

/// One file of a new plugin: where it goes in NAME/, and its template.
struct Template {
    path: String,
    text: &'static str,
    executable: bool,
}

impl Template {
    fn new(path: impl Into<String>, text: &'static str) -> Self {
        Self { path: path.into(), text, executable: false }
    }

    fn executable(path: &str, text: &'static str) -> Self {
        Self { path: path.to_owned(), text, executable: true }
    }
}

/// Every file of a plugin in `lang` for `world`; the WIT is added by [`write`].
fn templates(name: &str, lang: Lang, world: World) -> Vec<Template> {
    let pick = |validator, converter, describer| match world {
        World::Validator => validator,
        World::Converter => converter,
        World::Describer => describer,
    };
    let transfers = pick(common::TRANSFERS_VALIDATOR, common::TRANSFERS_CONVERTER, common::TRANSFERS_DESCRIBER);
    let mut files = vec![Template::new("transfers.jsonl", transfers)];
    match lang {
        Lang::Python => files.extend([
            Template::new("app.py", pick(python::APP_VALIDATOR, python::APP_CONVERTER, python::APP_DESCRIBER)),
            Template::executable("build.sh", python::BUILD),
            Template::new("README.md", python::README),
            Template::new(".gitignore", python::GITIGNORE),
        ]),
        Lang::Js => files.extend([
            // Named after the plugin, so an editor's tab or a stack trace says which plugin it is.
            Template::new(format!("{name}.js"), pick(js::VALIDATOR, js::CONVERTER, js::DESCRIBER)),
            Template::new("package.json", js::PACKAGE),
            Template::new("componentize.mjs", js::COMPONENTIZE),
            Template::executable("build.sh", js::BUILD),
            Template::new("README.md", js::README),
            Template::new(".gitignore", js::GITIGNORE),
        ]),
        Lang::Rust => files.extend([
            Template::new("Cargo.toml", rust::CARGO),
            Template::new("rustfmt.toml", rust::RUSTFMT),
            Template::new("src/lib.rs", pick(rust::LIB_VALIDATOR, rust::LIB_CONVERTER, rust::LIB_DESCRIBER)),
            Template::executable("build.sh", rust::BUILD),
            Template::new("README.md", rust::README),
            Template::new(".gitignore", rust::GITIGNORE),
        ]),
    }
    files
}

/// Fills a template. The README sections go in first, since they carry
/// placeholders of their own.
fn render(text: &str, name: &str, world: World) -> String {
    let policy = match world {
        World::Validator => common::POLICY_VALIDATOR,
        World::Converter => common::POLICY_CONVERTER,
        World::Describer => common::POLICY_DESCRIBER,
    };
    text.replace("{{policy}}", policy.trim_end())
        .replace("{{rules}}", common::RULES.trim_end())
        .replace("{{name}}", name)
        // A Rust crate's library (and so its .wasm) is named with '_' for '-'.
        .replace("{{crate_name}}", &name.replace('-', "_"))
        .replace("{{world}}", world.as_str())
}

/// Writes NAME/ under `parent`: a plugin in `lang` for `world`. Returns the
/// files written, relative to `parent` (so `NAME/build.sh`, ...).
///
/// NAME follows the engine's rule for plugin names, so the folder, the
/// component (`dist/NAME.wasm`) and the name it is pushed under all match.
/// NAME/ may exist only as an empty directory: nothing is ever overwritten.
/// The folder is assembled beside its final place and renamed into it, so a
/// failure leaves no half-written plugin behind.
pub fn write(parent: &Path, name: &str, lang: Lang, world: World) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !super::valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    // `Path::new("")` (a bare NAME) means the current directory.
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    // Checked first, so that a missing parent is reported as itself, not as the staging folder.
    fs::read_dir(parent).map_err(|source| ScaffoldError::Io { path: parent.to_owned(), source })?;
    let target = parent.join(name);
    refuse_if_taken(&target)?;

    // Hidden, and unique to this process and moment, so that two runs never share it.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let staging = parent.join(format!(".{name}.new-{}-{nanos}", std::process::id()));
    // Created here, and only once created is it ours to remove on failure.
    fs::create_dir(&staging).map_err(|source| ScaffoldError::Io { path: staging.clone(), source })?;
    let written = fill(&staging, name, lang, world).and_then(|written| {
        // rename(2) also replaces an empty directory, and fails if the
        // target gained files since the check above.
        match fs::rename(&staging, &target) {
            Ok(()) => Ok(written),
            Err(_) if refuse_if_taken(&target).is_err() => Err(ScaffoldError::TargetExists(target.clone())),
            Err(source) => Err(ScaffoldError::Io { path: target.clone(), source }),
        }
    });
    if written.is_err() {
        // Best effort: the error being reported matters more than this one.
        let _ = fs::remove_dir_all(&staging);
    }
    let prefix = PathBuf::from(name);
    Ok(written?.into_iter().map(|path| prefix.join(path)).collect())
}

/// Refuses a target that exists as anything but an empty directory.
fn refuse_if_taken(target: &Path) -> Result<(), ScaffoldError> {
    let io = |source| ScaffoldError::Io { path: target.to_owned(), source };
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
        Ok(meta) if !meta.is_dir() => Err(ScaffoldError::TargetExists(target.to_owned())),
        Ok(_) => match fs::read_dir(target).map_err(io)?.next() {
            None => Ok(()),
            Some(_) => Err(ScaffoldError::TargetExists(target.to_owned())),
        },
    }
}

/// Writes every file into the empty directory `root`; returns their paths relative to it.
fn fill(root: &Path, name: &str, lang: Lang, world: World) -> Result<Vec<PathBuf>, ScaffoldError> {
    let mut written = Vec::new();
    for template in templates(name, lang, world) {
        let relative = PathBuf::from(&template.path);
        write_file(root, &relative, &render(template.text, name, world), template.executable)?;
        written.push(relative);
    }
    // Verbatim: the interface is the engine's, not a template.
    let wit = PathBuf::from("wit").join("plugin.wit");
    write_file(root, &wit, WIT, false)?;
    written.push(wit);
    Ok(written)
}

fn write_file(root: &Path, relative: &Path, text: &str, executable: bool) -> Result<(), ScaffoldError> {
    let path = root.join(relative);
    let io = |source| ScaffoldError::Io { path: path.clone(), source };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    // create_new: never overwrite, even a file that appeared meanwhile.
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    if executable {
        // Set explicitly rather than through the creation mode, which the umask would narrow.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    Ok(())
}

/// What to run next, for the command to print after [`write`].
pub fn next_steps(name: &str, lang: Lang) -> String {
    let test_first = if lang == Lang::Rust { "cargo test && " } else { "" };
    format!(
        "cd {name}\n{test_first}./build.sh\ntransfer-engine plugins test dist/{name}.wasm --transfers transfers.jsonl\n\
         transfer-engine plugins push dist/{name}.wasm --name {name} --activate\n"
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A fresh, empty directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
            let dir = std::env::temp_dir().join(format!("te-scaffold-test-{}-{n}-{nanos}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn is_executable(path: &Path) -> bool {
        fs::metadata(path).unwrap().permissions().mode() & 0o111 == 0o111
    }

    #[test]
    fn a_python_validator_scaffold_has_a_build_script_and_expectations() {
        let tmp = TempDir::new();
        let written = write(&tmp.0, "limits-eu", Lang::Python, World::Validator).unwrap();
        let root = tmp.0.join("limits-eu");
        for file in ["app.py", "build.sh", "README.md", "transfers.jsonl", "wit/plugin.wit", ".gitignore"] {
            assert!(written.contains(&Path::new("limits-eu").join(file)), "{file} not reported in {written:?}");
            assert!(root.join(file).is_file(), "{file} missing");
        }
        assert!(is_executable(&root.join("build.sh")));
        let build = read(&root.join("build.sh"));
        assert!(build.contains("-w validator componentize") && build.contains("dist/limits-eu.wasm"), "{build}");
        assert!(build.contains("componentize-py==$version") && build.contains("version=0.25.1"));
        assert!(read(&root.join("app.py")).contains("class WitWorld(wit_world.WitWorld)"));
        let transfers = read(&root.join("transfers.jsonl"));
        assert!(transfers.lines().count() >= 3 && transfers.lines().all(|l| l.contains("\"expect\"")), "{transfers}");
        assert!(transfers.contains("amount_over_limit"));
        assert_eq!(read(&root.join("wit/plugin.wit")), WIT);
    }

    #[test]
    fn every_language_and_world_renders_with_every_placeholder_filled_and_an_executable_build_script() {
        let tmp = TempDir::new();
        for lang in Lang::ALL {
            for world in World::ALL {
                let name = format!("my-{lang}-{world}");
                let written = write(&tmp.0, &name, lang, world).unwrap();
                assert!(is_executable(&tmp.0.join(&name).join("build.sh")), "{name}");
                for path in &written {
                    let text = read(&tmp.0.join(path));
                    assert!(!text.contains("{{"), "{} keeps a placeholder", path.display());
                }
                let readme = read(&tmp.0.join(&name).join("README.md"));
                assert!(readme.contains(&format!("plugins push dist/{name}.wasm --name {name} --activate")), "{readme}");
                assert!(readme.contains(&format!("**{world}**")) && readme.contains("## The rules"), "{readme}");
                assert!(read(&tmp.0.join(&name).join("build.sh")).contains(&format!("dist/{name}.wasm")));
            }
        }
    }

    #[test]
    fn a_rust_scaffold_keeps_the_name_for_the_package_and_the_output_and_underscores_it_for_the_library() {
        let tmp = TempDir::new();
        write(&tmp.0, "fx-rates", Lang::Rust, World::Converter).unwrap();
        let root = tmp.0.join("fx-rates");
        assert!(read(&root.join("Cargo.toml")).contains("name = \"fx-rates\""));
        let build = read(&root.join("build.sh"));
        assert!(build.contains("release/fx_rates.wasm") && build.contains("out=\"dist/fx-rates.wasm\""), "{build}");
        let lib = read(&root.join("src/lib.rs"));
        assert!(lib.contains("world: \"converter\", path: \"wit\"") && lib.contains("#[cfg(test)]"), "{lib}");
    }

    #[test]
    fn a_js_scaffold_names_its_source_after_the_plugin_and_pins_its_tools() {
        let tmp = TempDir::new();
        let written = write(&tmp.0, "describe", Lang::Js, World::Describer).unwrap();
        assert!(written.contains(&PathBuf::from("describe/describe.js")), "{written:?}");
        let package = read(&tmp.0.join("describe/package.json"));
        assert!(package.contains("\"@bytecodealliance/componentize-js\": \"0.23.0\""), "{package}");
        assert!(package.contains("\"@bytecodealliance/preview2-shim\": \"0.25.0\""), "{package}");
        assert!(read(&tmp.0.join("describe/build.sh")).contains("node componentize.mjs describe.js wit describer"));
    }

    #[test]
    fn an_existing_empty_directory_is_filled() {
        let tmp = TempDir::new();
        fs::create_dir(tmp.0.join("empty")).unwrap();
        write(&tmp.0, "empty", Lang::Python, World::Describer).unwrap();
        assert!(tmp.0.join("empty/app.py").is_file());
    }

    #[test]
    fn an_existing_directory_with_files_or_a_file_in_the_way_is_refused_and_left_as_it_was() {
        let tmp = TempDir::new();
        fs::create_dir(tmp.0.join("taken")).unwrap();
        fs::write(tmp.0.join("taken/notes.txt"), "mine").unwrap();
        let error = write(&tmp.0, "taken", Lang::Rust, World::Validator).unwrap_err();
        assert!(matches!(error, ScaffoldError::TargetExists(_)), "{error}");
        assert_eq!(fs::read_dir(tmp.0.join("taken")).unwrap().count(), 1);
        assert_eq!(read(&tmp.0.join("taken/notes.txt")), "mine");

        fs::write(tmp.0.join("file"), "mine").unwrap();
        assert!(matches!(write(&tmp.0, "file", Lang::Js, World::Validator), Err(ScaffoldError::TargetExists(_))));
        // No staging folder is left behind either.
        assert_eq!(fs::read_dir(&tmp.0).unwrap().count(), 2);
    }

    #[test]
    fn a_bad_name_is_refused_before_anything_is_written() {
        let tmp = TempDir::new();
        for bad in ["", "Limits", "9lives", "-x", "a/b", "../up", "a b", "x".repeat(64).as_str()] {
            let error = write(&tmp.0, bad, Lang::Python, World::Validator).unwrap_err();
            assert!(matches!(error, ScaffoldError::BadName(_)), "{bad:?}: {error}");
        }
        assert_eq!(fs::read_dir(&tmp.0).unwrap().count(), 0);
    }

    #[test]
    fn languages_parse_from_their_usual_names() {
        assert_eq!(Lang::parse("rust"), Some(Lang::Rust));
        assert_eq!(Lang::parse("py"), Some(Lang::Python));
        assert_eq!(Lang::parse("python"), Some(Lang::Python));
        assert_eq!(Lang::parse("javascript"), Some(Lang::Js));
        assert_eq!(Lang::parse("js"), Some(Lang::Js));
        assert_eq!(Lang::parse("ruby"), None);
        assert!(Lang::ALL.iter().all(|l| Lang::parse(l.as_str()) == Some(*l)));
    }

    #[test]
    fn the_next_steps_are_the_three_commands_of_the_readme() {
        let steps = next_steps("limits-eu", Lang::Rust);
        assert!(steps.contains("cargo test && ./build.sh"));
        assert!(steps.contains("plugins test dist/limits-eu.wasm --transfers transfers.jsonl"));
        assert!(next_steps("x", Lang::Js).starts_with("cd x\n./build.sh\n"));
    }
}
